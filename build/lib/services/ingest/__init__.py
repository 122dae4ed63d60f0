"""The ingest service: partner events over HTTP, validated, pseudonymised, published as Avro."""
