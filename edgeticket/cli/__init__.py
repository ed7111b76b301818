"""edgeticket.cli"""
