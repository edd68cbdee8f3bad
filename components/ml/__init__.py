"""ML building blocks: the U-Net, its input pipeline, metrics and plots, export and multi-worker set-up."""
