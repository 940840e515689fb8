"""faceprivacy.unlearn"""
