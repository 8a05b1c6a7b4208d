"""TOTP passcodes (RFC 6238's test vectors) and the multi-factor rules."""

from __future__ import annotations

from cumulo.identity import receipts, totp

# RFC 6238 appendix B: the ASCII secret "12345678901234567890", SHA-1, last 6 digits.
RFC_SECRET = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
METHODS = ("password", "token", "application_credential", "totp")


def test_passcodes_follow_rfc_6238():
    assert totp.passcode(RFC_SECRET, 59) == "287082"
    assert totp.passcode(RFC_SECRET, 1111111109) == "081804"
    assert totp.passcode(RFC_SECRET.lower() + "====", 1234567890) == "005924"


def test_passcode_of_the_previous_window_is_accepted_only_when_configured():
    earlier = totp.passcode(RFC_SECRET, 1111111109 - 30)
    assert totp.passcode_matches(RFC_SECRET, earlier, 1, at=1111111109)
    assert not totp.passcode_matches(RFC_SECRET, earlier, 0, at=1111111109)
    assert not totp.passcode_matches("not base32!", "081804", 1, at=1111111109)


def test_mfa_rules_need_one_rule_met():
    options = {"multi_factor_auth_rules": [["password", "totp"], ["password", "token"]]}
    assert not receipts.rules_satisfied(options, {"password"}, METHODS)
    assert receipts.rules_satisfied(options, {"password", "totp"}, METHODS)
    assert receipts.required_methods(options, {"totp"}, METHODS) == [["password", "totp"]]


def test_mfa_rules_off_or_of_unknown_methods_lock_nobody_out():
    rules = [["password", "totp"]]
    off = {"multi_factor_auth_rules": rules, "multi_factor_auth_enabled": False}
    assert receipts.rules_satisfied(off, {"password"}, METHODS)
    unknown = {"multi_factor_auth_rules": [["saml2", "kerberos"]]}
    assert receipts.rules_satisfied(unknown, {"password"}, METHODS)
    assert receipts.rules_satisfied({}, {"password"}, METHODS)
