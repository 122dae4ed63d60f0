"""What all three services share: settings, events and their Avro codec, topics, identity, database."""
