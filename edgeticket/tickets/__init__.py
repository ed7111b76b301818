"""edgeticket.tickets"""
