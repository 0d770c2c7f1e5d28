"""The HTML pages, one module per area; each exports its ``routes``."""
