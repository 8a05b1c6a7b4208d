"""Generated passwords are safe to pass on a command line."""

from cumulo.identity.bootstrap import new_password


def test_generated_passwords_are_letters_and_digits_and_differ():
    passwords = {new_password() for _ in range(2000)}
    assert len(passwords) == 2000
    # One starting with "-" is read by argparse (the openstack CLI) as an option.
    assert all(p.isalnum() and p.isascii() and len(p) == 22 for p in passwords)
