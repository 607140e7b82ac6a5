"""Features: request contexts and stored entity data turned into dense vectors."""
