"""The knowledge half of expertbot: documents → chunks → embeddings → index → search."""
