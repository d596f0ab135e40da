"""A run's command-line arguments as MLflow params (:mod:`airflow_provider.core.argument_params`)."""

from __future__ import annotations

import argparse

import pytest

from airflow_provider.core.argument_params import argument_params
from airflow_provider.core.hyperdrive.sampling import parameter_name
from airflow_provider.core.tracking import _MAX_PARAM_VALUE


def test_double_dash_option_with_its_value() -> None:
    assert argument_params(["--lr", "0.01", "--epochs", "3"]) == {"lr": "0.01", "epochs": "3"}


def test_option_with_equals_keeps_everything_after_the_first_equals() -> None:
    assert argument_params(["--lr=0.01", "--a=b=c", "--empty="]) == {"lr": "0.01", "a": "b=c", "empty": ""}


def test_single_dash_option() -> None:
    assert argument_params(["-x", "5", "-n=2"]) == {"x": "5", "n": "2"}


def test_names_are_stripped_like_a_sweeps_hyperparameters() -> None:
    for option in ("--lr", "-lr", "---lr", "--learning-rate"):
        assert list(argument_params([option, "1"])) == [parameter_name(option)]


def test_flag_at_the_end_is_true() -> None:
    assert argument_params(["--epochs", "3", "--verbose"]) == {"epochs": "3", "verbose": "True"}


def test_flag_before_another_option_is_true() -> None:
    assert argument_params(["--verbose", "--lr", "0.1", "-q", "-x=1"]) == {
        "verbose": "True", "lr": "0.1", "q": "True", "x": "1"}


def test_flag_value_is_what_argparse_store_true_logs() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--lr")
    parsed = {k: str(v) for k, v in vars(parser.parse_args(["--verbose", "--lr", "1e-3"])).items()}
    assert argument_params(["--verbose", "--lr", "1e-3"]) == parsed


@pytest.mark.parametrize("number", ["-1", "-0.5", "-1e-3", "-.5", "-2.", "-3E+4", "-1_000"])
def test_negative_number_after_an_option_is_its_value(number: str) -> None:
    assert argument_params(["--shift", number, "--epochs", "2"]) == {"shift": number, "epochs": "2"}


def test_negative_number_alone_is_positional() -> None:
    assert argument_params(["-1", "--flag", "-2"]) == {"arg_0": "-1", "flag": "-2"}


def test_dash_like_tokens_that_are_not_numbers_are_options() -> None:
    assert argument_params(["--low", "-inf", "--x", "-1e"]) == {"low": "True", "inf": "True", "x": "True",
                                                                "1e": "True"}


def test_positional_arguments_are_numbered_in_order_between_options() -> None:
    params = argument_params(["train.csv", "--lr", "0.1", "test.csv", "--verbose", "--epochs=2", "out"])
    assert params == {"arg_0": "train.csv", "lr": "0.1", "arg_1": "test.csv", "verbose": "True",
                      "epochs": "2", "arg_2": "out"}


def test_a_flag_followed_by_a_positional_reads_as_an_option_with_its_value() -> None:
    """The script's parser is not known: put positional arguments first, or after ``--``."""
    assert argument_params(["--verbose", "data.csv"]) == {"verbose": "data.csv"}
    assert argument_params(["data.csv", "--verbose"]) == {"arg_0": "data.csv", "verbose": "True"}
    assert argument_params(["--verbose", "--", "data.csv"]) == {"verbose": "True", "arg_0": "data.csv"}


def test_lone_dash_is_a_value_not_an_option() -> None:
    assert argument_params(["--input", "-", "-"]) == {"input": "-", "arg_0": "-"}


def test_double_dash_ends_options() -> None:
    params = argument_params(["--lr", "0.1", "--", "--not-an-option", "-x", "--", "file"])
    assert params == {"lr": "0.1", "arg_0": "--not-an-option", "arg_1": "-x", "arg_2": "--", "arg_3": "file"}


def test_option_before_double_dash_is_a_flag() -> None:
    assert argument_params(["--verbose", "--", "data.csv"]) == {"verbose": "True", "arg_0": "data.csv"}


def test_repeated_option_joins_its_values_in_order() -> None:
    params = argument_params(["--layer", "64", "--epochs", "2", "--layer", "32", "--layer=16", "-layer", "8"])
    assert params == {"layer": "64 32 16 8", "epochs": "2"}


def test_repeated_flag() -> None:
    assert argument_params(["-v", "-v"]) == {"v": "True True"}


@pytest.mark.parametrize("option", ["--a+b", "---", "--.", "--../x", "--/abs", "--a//b", "--é!", f"--{'n' * 251}"])
def test_names_mlflow_refuses_are_skipped_with_their_value(option: str) -> None:
    assert argument_params([option, "value", "--ok", "1"]) == {"ok": "1"}
    assert argument_params([f"{option}=value", "--ok", "1"]) == {"ok": "1"}


def test_an_empty_name_is_skipped() -> None:
    assert argument_params(["--=x", "-=y", "--ok", "1"]) == {"ok": "1"}


@pytest.mark.parametrize("name", ["a.b", "a/b", "a:b", "a b", "A_9-z", "n" * 250, "größe"])
def test_names_mlflow_accepts_are_kept(name: str) -> None:
    assert argument_params([f"--{name}", "1"]) == {name: "1"}


def test_long_values_are_cut_like_log_params_cuts_them() -> None:
    long = "x" * (_MAX_PARAM_VALUE + 10)
    assert argument_params(["--data", long]) == {"data": long[:_MAX_PARAM_VALUE]}
    joined = argument_params(["--p", "y" * (_MAX_PARAM_VALUE - 1), "--p", "zz"])["p"]
    assert len(joined) == _MAX_PARAM_VALUE and joined.endswith("y ")


def test_non_string_arguments_are_read_with_str() -> None:
    assert argument_params(["--epochs", 3, "--lr", 0.5, "--shift", -1, "--scale", -2.5e-3, True, "--on", False]) == {
        "epochs": "3", "lr": "0.5", "shift": "-1", "scale": "-0.0025", "arg_0": "True", "on": "False"}


def test_values_are_kept_as_given() -> None:
    params = argument_params(["--data", "${{inputs.rows}}", "--token", "***", "--msg", "two words", "--empty", ""])
    assert params == {"data": "${{inputs.rows}}", "token": "***", "msg": "two words", "empty": ""}


def test_nothing_gives_nothing() -> None:
    assert argument_params([]) == {}
    assert argument_params(["--"]) == {}


def test_every_name_is_a_valid_mlflow_param_key() -> None:
    from mlflow.utils.validation import _validate_param_name

    for name in argument_params(["--a.b", "1", "-x", "pos", "--c:d=2", "--e f", "--größe", "3"]):
        _validate_param_name(name)
