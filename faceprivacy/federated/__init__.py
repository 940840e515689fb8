"""faceprivacy.federated"""
