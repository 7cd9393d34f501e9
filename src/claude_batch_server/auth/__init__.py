"""Logging in with OS accounts: who may (`policy`), how a password is checked (one
`base.Authenticator` per backend: `pam`, `shadow` with `xcrypt`), throttling (`throttle`),
the tokens handed out (`tokens`), and the service that puts them together (`service`)."""
