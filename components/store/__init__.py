"""The model store: TF Serving's model base path (local, s3://, gs://), its versions, models.config and warm-up."""
