"""The login settings: which combinations are refused, by name, before anything connects."""

import pytest

from jobcluster.credentials import EtcdAuth
from jobcluster.settings import ConfigError, Settings


def test_the_default_database_user_is_the_programs_role_not_the_superuser() -> None:
    assert Settings.from_env({}).database_url == "postgresql://jobcluster@127.0.0.1:5432/jobcluster"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ETCD_USER": "jobcluster"}, "ETCD_USER and ETCD_PASSWORD_FILE go together"),
        ({"ETCD_PASSWORD_FILE": "/x"}, "ETCD_USER and ETCD_PASSWORD_FILE go together"),
        ({"REDIS_USER": "jobcluster"}, "REDIS_USER needs a password: set REDIS_PASSWORD_FILE"),
        (
            {"DATABASE_URL": "postgresql://u:pw@h/db", "DATABASE_PASSWORD_FILE": "/x"},
            "DATABASE_URL holds a password and DATABASE_PASSWORD_FILE is set",
        ),
        (
            {"REDIS_ADDR": "redis://u:pw@h:6379", "REDIS_PASSWORD_FILE": "/x"},
            "REDIS_ADDR holds a password and REDIS_PASSWORD_FILE is set",
        ),
    ],
)
def test_a_login_half_given_or_given_twice_is_refused_by_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


@pytest.mark.parametrize(
    "env",
    [
        {},
        {
            "ETCD_USER": "u",
            "ETCD_PASSWORD_FILE": "/x",
            "REDIS_USER": "u",
            "REDIS_PASSWORD_FILE": "/y",
            "DATABASE_PASSWORD_FILE": "/z",
        },
        {"REDIS_USER": "u", "REDIS_ADDR": "redis://:pw@h:6379", "DATABASE_URL": "postgresql://u:pw@h/db"},
    ],
)
def test_whole_logins_are_accepted_without_reading_the_files(env: dict[str, str]) -> None:
    Settings.from_env(env)  # the files are read when connecting, not here


def test_the_etcd_password_stays_out_of_reprs() -> None:
    assert "s3cret" not in repr(EtcdAuth("jobcluster", "s3cret"))
