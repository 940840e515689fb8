"""faceprivacy.audit"""
