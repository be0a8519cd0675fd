"""Data: generic keypoint/condition tables and the embedded GeoBiked table."""
