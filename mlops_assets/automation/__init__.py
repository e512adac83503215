"""Jobs, sensors and schedules that run the lifecycle without a human."""
