"""What all three services share: settings, events, the Avro codec, topics, identity, database."""
