"""The landing zone: where arrivals are listed (local folder, S3 prefix), identified by content,
checked against the partition-key policy and the spec's limits, read, and quarantined when
refused; and where delayed-label files are read. Used by the raw-data stage and the sensors.
"""
