"""Jobs that call back: a bounded queue of transcriptions whose result is POSTed, signed, to a
checked callback URL (docs/protocol.md "Jobs that call back", docs/security.md)."""
