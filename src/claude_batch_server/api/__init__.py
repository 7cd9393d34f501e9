"""HTTP: dependencies (`deps`), body limits (`limits`), the errors mapped to responses
(`errors`), request and response models (`schemas`), and thin routes."""
