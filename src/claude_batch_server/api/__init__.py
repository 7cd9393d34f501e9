"""HTTP: dependencies (`deps`), request and response models (`schemas`), and thin routes."""
