"""Fault drills: SIGKILLed workers, registry errors and edited records against the promotion state machine."""
