"""faceprivacy.mri"""
