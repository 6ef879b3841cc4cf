"""Long Range Arena tasks, data pipeline, objectives, sharding and the trainer."""
