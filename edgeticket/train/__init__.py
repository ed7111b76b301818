"""edgeticket.train"""
