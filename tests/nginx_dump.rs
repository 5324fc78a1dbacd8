//! Cross-checks the parser against `nginx -T`.
