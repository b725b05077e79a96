"""Security primitives: Secure Boot signatures, pre-encrypted images, flash encryption."""
