"""edgeticket.bench"""
