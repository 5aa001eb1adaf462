"""The runs table's filter grammar (labstats.viewer.filters): what it means, and that any
text, however hostile, is either a filter or a FilterError with a sentence."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labstats.viewer.filters import MAX_DEPTH, MAX_FILTER_CHARS, FilterError, compile_filter, tokenize

KEYS = {"lr", "opt", "seed", "amp", "batch size", "name", "model.depth"}
METRICS = {"val/loss", "acc", "train/loss"}


def run(config=None, metrics=None, **fields):
    """A lookup as the table gives one: config keys, metric summaries, the run's fields."""
    config, metrics = config or {}, metrics or {}

    def lookup(ref):
        if ref[0] == "config":
            return config.get(ref[1])
        if ref[0] == "metric":
            summary = metrics.get(ref[1])
            return summary.get(ref[2]) if summary else None
        return fields.get(ref[1])

    return lookup


def matches(text, lookup):
    return compile_filter(text, KEYS, METRICS).matches(lookup)


ADAM = run(
    {"lr": 0.001, "opt": "adam", "seed": 1, "amp": True}, {"val/loss": {"last": 0.2, "min": 0.05, "max": 2}}
)
SGD = run(
    {"lr": 0.1, "opt": "sgd", "seed": 2, "amp": False}, {"val/loss": {"last": 0.5, "min": 0.4, "max": 3}}
)


def test_the_issue_example_over_config_and_metric_parts():
    text = 'lr < 0.01 and val/loss.min < 0.1 and opt == "adam"'
    assert matches(text, ADAM)
    assert not matches(text, SGD)
    assert matches("val/loss < 0.3", ADAM)  # a bare metric is its last value
    assert not matches("val/loss.last > 0.3", ADAM)
    assert matches("val/loss.max >= 3", SGD)


def test_and_binds_tighter_than_or_and_parentheses_and_not_change_it():
    assert matches('opt == "sgd" or opt == "adam" and seed == 2', SGD)
    assert not matches('(opt == "sgd" or opt == "adam") and seed == 2', ADAM)
    assert matches('not opt == "sgd"', ADAM)
    assert matches('NOT (opt == "sgd" OR lr > 1)', ADAM)  # keywords in any case
    assert matches("amp", ADAM)  # a boolean key alone
    assert matches("not amp", SGD)


def test_in_lists_strings_numbers_and_names_with_odd_characters():
    assert matches('opt in ("adam", "rmsprop")', ADAM)
    assert matches("seed not in [1, 3,]", SGD)
    assert matches("lr in (-1, 1e-3)", ADAM)
    assert matches("`batch size` == 64", run({"batch size": 64}))
    assert matches("model.depth >= 3", run({"model.depth": 4}))  # a config key wins over a part
    assert matches(r'opt == "say \"hi\"\\"', run({"opt": 'say "hi"\\'}))
    assert matches("opt == 'x'", run({"opt": "x"}))
    assert matches('name == "b"', run({"name": "b"}))  # a config key named like a field wins


def test_a_run_without_the_value_matches_no_comparison_but_null():
    empty = run({}, {})
    assert not matches("lr < 1", empty)
    assert not matches("lr >= 1", empty)
    assert not matches('opt in ("adam")', empty)
    assert matches("lr == null", empty)
    assert matches("lr != null", ADAM)
    assert matches('opt not in ("adam")', empty)


def test_the_runs_own_fields_can_be_named():
    fields = compile_filter('status == "crashed" and duration > 60', set(), set())
    assert fields.matches(run(status="crashed", duration=61.0))
    assert not fields.matches(run(status="finished", duration=61.0))


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("", "empty"),
        ("lr <", "column 5: expected a name, a number"),
        ("lr < 0.01 and", "found the end of the filter"),
        ("(lr < 1", "expected ')'"),
        ("lr = 1", "compare with =="),
        ("lr < 1 && seed == 2", "use and, or, not"),
        ('opt == "adam', "no closing"),
        ("`lr", "no closing `"),
        ("lr < 1 seed", "expected and, or, or the end"),
        ("opt in adam", "a list after in"),
        ("1 < 2", None),  # two literals compare fine
        ("1 < 'a'", "a number cannot be compared with a string"),
        ("lrr < 1", "no listed run has a config key or metric named 'lrr' (did you mean lr"),
        ("val/los.min < 1", "did you mean val/loss"),
        ("1e999 > lr", "too large"),
        ("lr < 1 < 2", "expected and, or"),
        ("3", "a comparison"),
    ],
)
def test_a_bad_expression_is_a_sentence_that_says_where(text, said):
    if said is None:
        compile_filter(text, KEYS, METRICS)
        return
    with pytest.raises(FilterError, match=None) as caught:
        compile_filter(text, KEYS, METRICS)
    assert said in str(caught.value)


def test_a_number_compared_with_a_string_names_the_run_and_the_kinds():
    chosen = compile_filter("lr < 0.01", KEYS, METRICS)
    with pytest.raises(FilterError) as caught:
        chosen.matches(run({"lr": "auto"}), "run sweep-3")
    text = str(caught.value)
    assert "lr is 'auto' (a string) in run sweep-3" in text
    assert "a string cannot be compared with a number" in text
    with pytest.raises(FilterError, match="a boolean cannot be compared with a number"):
        compile_filter("amp == 1", KEYS, METRICS).matches(ADAM)
    with pytest.raises(FilterError, match="not true or false"):
        compile_filter("opt", KEYS, METRICS).matches(ADAM)
    with pytest.raises(FilterError, match="only numbers and strings can be ordered"):
        compile_filter("amp < true", KEYS, METRICS).matches(ADAM)


def test_hostile_sizes_are_refused_before_they_cost():
    with pytest.raises(FilterError, match="over the"):
        tokenize("a" * (MAX_FILTER_CHARS + 1))
    for deep in ("(" * 5000 + "lr < 1" + ")" * 5000, "not " * 1000 + "amp"):
        with pytest.raises(FilterError, match=f"nested more than {MAX_DEPTH}"):
            compile_filter(deep[:MAX_FILTER_CHARS], KEYS, METRICS)
    huge = compile_filter("lr < " + "9" * 1990, KEYS, METRICS)  # an integer of 1,990 digits
    assert huge.matches(run({"lr": 1e300}))


ALPHABET = st.sampled_from(list("abclr_/.`\"'\\()[],<>=!-+ 0123456789eEnotandorinulltrue\x00é\u202e\n"))
WORDS = ["lr", "opt", "val/loss.min", "acc", "and", "or", "not", "in", "(", ")", "[", "]", ","]
PIECES = st.sampled_from(
    [*WORDS, "==", "!=", "<", ">=", "0.1", "-3", '"adam"', "'x'", "null", "true", "`seed`"]
)
KIND_ERRORS = ("cannot be compared", "not true or false", "ordered")


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.text(max_size=200), st.text(ALPHABET, max_size=80), st.lists(PIECES, max_size=25).map(" ".join)
    )
)
def test_any_text_is_a_filter_or_a_filter_error(text):
    said = ""
    try:
        chosen = compile_filter(text, KEYS, METRICS)
    except FilterError as exc:
        said = str(exc)
    if said:
        return  # a sentence, never another exception
    for lookup in (ADAM, SGD, run({}, {})):
        try:
            assert chosen.matches(lookup) in (True, False)
        except FilterError as exc:  # values of two kinds compared: said, not raised as anything else
            said = str(exc)
        assert not said or any(words in said for words in KIND_ERRORS)


@settings(max_examples=200, deadline=None)
@given(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(-1e6, 1e6),
    st.sampled_from(["<", "<=", ">", ">=", "==", "!="]),
)
def test_a_comparison_means_what_python_means(value, bound, op):
    expected = {"<": value < bound, "<=": value <= bound, ">": value > bound, ">=": value >= bound,
                "==": value == bound, "!=": value != bound}[op]  # fmt: skip
    assert matches(f"lr {op} {bound!r}", run({"lr": value})) == expected


# Annotations given after the fact: project, tag, starred and the display name.

BEST = run(tag=["best", "baseline"], project="vision", starred=True, name="lr sweep 3")
PLAIN = run(tag=[], project=None, starred=False, name="run-7")


def annotated(text, lookup):
    return compile_filter(text, {"lr"}, METRICS).matches(lookup)


@pytest.mark.parametrize(
    ("text", "best", "plain"),
    [
        ('tag == "best"', True, False),
        ('"best" == tag', True, False),
        ('tag != "best"', False, True),
        ('tag == "bes"', False, False),  # a whole tag, not a part of one
        ('tag in ("other", "baseline")', True, False),
        ('tag not in ("best")', False, True),
        ("tag", True, False),  # any tag at all
        ("not tag", False, True),
        ('project == "vision"', True, False),
        ("project == null", False, True),
        ("starred", True, False),
        ("starred == false", False, True),
        ('name == "lr sweep 3"', True, False),
        ('tag == "best" and starred and project == "vision"', True, False),
    ],
)
def test_annotations_can_be_filtered_on(text, best, plain):
    assert annotated(text, BEST) is best
    assert annotated(text, PLAIN) is plain


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('tag < "best"', "tag can only be compared with == or !="),
        ("tag == 3", "tag is compared with text, not 3 (a number)"),
        ("tag in (1, 2)", "tag is compared with text, not 1 (a number)"),
        ("project < 3", "cannot be compared"),
    ],
)
def test_a_tag_compared_with_what_is_not_text_is_a_sentence(text, said):
    with pytest.raises(FilterError, match=said.replace("(", r"\(").replace(")", r"\)")):
        annotated(text, BEST)
