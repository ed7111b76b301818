"""edgeticket.export"""
