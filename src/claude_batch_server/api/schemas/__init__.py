"""Request and response models, apart from the tables: the JSON the contract fixes."""
