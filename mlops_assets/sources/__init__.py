"""The landing zone: where arrivals are listed (local folder, S3 prefix), read, keyed and
quarantined, and where delayed-label files are read. Used by the raw-data stage and the sensors.
"""
