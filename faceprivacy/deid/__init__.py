"""faceprivacy.deid"""
