"""The PAI-TF command and the console statements, as the seed and its users typed them."""

from __future__ import annotations

import shlex

import pytest
from hypothesis import given, strategies as st

from liqi.core.console_statements import (
    AddResource,
    DescResource,
    DropResource,
    Kill,
    ListResources,
    Pai,
    ShowInstances,
    Statement,
    Status,
    Use,
    Wait,
    WhoAmI,
    parse_statement,
)
from liqi.core.pai_command import (
    ClusterSpec,
    PaiCommand,
    is_complete,
    parse_cluster,
    parse_hyper_parameters,
    parse_pai,
    parse_pai_text,
    split_statements,
    tokenize,
)
from liqi.errors import InvalidRequestError

MNIST_VOLUMES = (
    "odps://algo_platform/volumes/mnist/train",
    "odps://algo_platform/volumes/mnist/test",
)
SEED_BUCKET = (
    "oss://wuji-xwt/models/?role_arn=acs:ram::xxxxxx:role/xxx&host=cn-hangzhou.oss.aliyun-inc.com"
)

# The seed document (/work/shared/seed/000_16e116ff9ccad54b.txt) as typed after the
# `odps@ project_name>` prompt: trailing blanks, indented continuation lines and the final ';'
# (followed by a blank in the first one) are the author's; ${project_name} is my_project.
SEED_ADD_TRAINING_TEST = "add file ~/tools/training_test.py"
SEED_TRAINING_TEST = (
    "pai -name tensorflow \n"
    '    -Dscript="odps://my_project/resources/training_test.py" \n'
    '    -Dvolumes="odps://algo_platform/volumes/mnist/train,odps://algo_platform/volumes/mnist/test"; '  # noqa: E501 - copied as typed
)
SEED_ADD_MNIST_SOFTMAX = "add file ~/tools/mnist_softmax.py"
SEED_MNIST_SOFTMAX = (
    "pai -name tensorflow121\n"
    '    -Dscript="odps://my_project/resources/mnist_softmax.py" \n'
    '    -Dvolumes="odps://algo_platform/volumes/mnist/train,odps://algo_platform/volumes/mnist/test" \n'  # noqa: E501 - copied as typed
    '    -Dbuckets="oss://wuji-xwt/models/?role_arn=acs:ram::xxxxxx:role/xxx&host=cn-hangzhou.oss.aliyun-inc.com";'
)
# /work/shared/reference/pai_eas.md B11, the blog's form (no blanks at line ends).
B11_BLOG = (
    'pai -name tensorflow121 -Dscript="odps://my_project/resources/mnist_softmax.py"\n'
    '    -Dvolumes="odps://algo_platform/volumes/mnist/train,odps://algo_platform/volumes/mnist/test"\n'
    '    -Dbuckets="oss://wuji-xwt/models/?role_arn=acs:ram::xxxxxx:role/xxx&host=cn-hangzhou.oss.aliyun-inc.com";'
)
# B11, the SQLFlow generator's form, without the reference's trailing `# or -Dcluster=...` note.
B11_SQLFLOW = (
    "pai -name tensorflow1150 -project algo_public_dev -DmaxHungTimeBeforeGCInSeconds=0 "
    "-DjobName=sqlflow_m -Dtags=dnn\n"
    "    -Dscript=job.tar.gz -DentryFile=entry.py -Dtables=odps://p/tables/train,odps://p/tables/val"
    " -Doutputs=odps://p/tables/res\n"
    "    -DhyperParameters='params.txt' "
    "-DcheckpointDir='oss://bucket/model/?role_arn=<arn>/<role>&host=<host>'\n"
    "    -DgpuRequired='0';"
)
CLUSTER_JSON = '{"ps":{"count":1},"worker":{"count":5}}'
# The "done when" line of issue 5, as `liqi console -e` receives it after the shell.
DONE_WHEN = (
    "add file examples/mnist/training_test.py; pai -name tensorflow "
    '-Dscript="odps://default/resources/training_test.py" '
    '-Dvolumes="odps://algo_platform/volumes/mnist/train,odps://algo_platform/volumes/mnist/test";'
)


def error_of(text: str) -> str:
    with pytest.raises(InvalidRequestError) as info:
        parse_statement(text)
    return info.value.message


# --- the seed's commands -----------------------------------------------------------------------


def test_seed_training_test_command_parses_as_typed() -> None:
    assert parse_statement(SEED_TRAINING_TEST) == Pai(
        PaiCommand(
            framework="tensorflow",
            framework_kind="tf1",
            script="odps://my_project/resources/training_test.py",
            volumes=MNIST_VOLUMES,
        )
    )


@pytest.mark.parametrize("text", [SEED_MNIST_SOFTMAX, B11_BLOG], ids=["seed", "b11-blog"])
def test_seed_mnist_softmax_command_parses_as_typed(text: str) -> None:
    assert parse_statement(text) == Pai(
        PaiCommand(
            framework="tensorflow121",
            framework_kind="tf1",
            script="odps://my_project/resources/mnist_softmax.py",
            volumes=MNIST_VOLUMES,
            buckets=(SEED_BUCKET,),
        )
    )


@pytest.mark.parametrize(
    ("text", "path"),
    [
        (SEED_ADD_TRAINING_TEST, "~/tools/training_test.py"),
        (SEED_ADD_MNIST_SOFTMAX, "~/tools/mnist_softmax.py"),
    ],
    ids=["training-test", "mnist-softmax"],
)
def test_seed_add_file_keeps_the_path_as_typed(text: str, path: str) -> None:
    assert parse_statement(text) == AddResource("file", path)


def test_seed_session_splits_into_its_four_statements() -> None:
    session = "\n".join(
        [
            SEED_ADD_TRAINING_TEST + ";",
            SEED_TRAINING_TEST,
            SEED_ADD_MNIST_SOFTMAX + ";",
            SEED_MNIST_SOFTMAX,
        ]
    )
    parsed = [parse_statement(s) for s in split_statements(session)]
    assert [type(s) for s in parsed] == [AddResource, Pai, AddResource, Pai]
    assert isinstance(parsed[3], Pai)
    assert parsed[3].command.buckets == (SEED_BUCKET,)


def test_done_when_line_splits_into_add_and_pai() -> None:
    first, second = (parse_statement(s) for s in split_statements(DONE_WHEN))
    assert first == AddResource("file", "examples/mnist/training_test.py")
    assert isinstance(second, Pai)
    assert second.command.script == "odps://default/resources/training_test.py"
    assert second.command.volumes == MNIST_VOLUMES


def test_sqlflow_generated_command_keeps_values_and_warns_about_platform_keys() -> None:
    command = parse_pai_text(B11_SQLFLOW)
    assert command == PaiCommand(
        framework="tensorflow1150",
        framework_kind="tf1",
        script="job.tar.gz",
        entry_file="entry.py",
        tables=("odps://p/tables/train", "odps://p/tables/val"),
        outputs=("odps://p/tables/res",),
        hyper_parameters="params.txt",
        checkpoint_dir="oss://bucket/model/?role_arn=<arn>/<role>&host=<host>",
        gpu_required=0,
        job_name="sqlflow_m",
        project="algo_public_dev",
        warnings=command.warnings,
    )
    for key, warning in zip(
        ["-project algo_public_dev", "-DmaxHungTimeBeforeGCInSeconds=0", "-Dtags=dnn"],
        command.warnings,
        strict=True,
    ):
        assert warning.startswith(key)
        assert "has no effect in liqi" in warning


@pytest.mark.parametrize(
    "cluster_word",
    [
        "-Dcluster='" + CLUSTER_JSON + "'",
        '-Dcluster="' + CLUSTER_JSON.replace('"', '\\"') + '"',
    ],
    ids=["single-quoted", "double-quoted-escaped"],
)
def test_sqlflow_cluster_form_in_both_quoting_styles(cluster_word: str) -> None:
    text = B11_SQLFLOW.replace("-DgpuRequired='0'", cluster_word)
    command = parse_pai_text(text)
    assert command.cluster == ClusterSpec(ps_count=1, worker_count=5)
    assert command.gpu_required == 0


@pytest.mark.parametrize(
    ("word", "value"),
    [
        ('-Dvolumes="a,b"', "-Dvolumes=a,b"),
        ('-Dcluster=\'{"ps":{"count":1}}\'', '-Dcluster={"ps":{"count":1}}'),
        ('-Dcluster="{\\"ps\\":{\\"count\\":1}}"', '-Dcluster={"ps":{"count":1}}'),
        ('-Dscript="it\'s.py"', "-Dscript=it's.py"),
        ("-Dx='a;b'", "-Dx=a;b"),
    ],
    ids=["comma-list", "json-single", "json-double-escaped", "apostrophe", "semicolon"],
)
def test_tokenize_removes_quotes_like_a_shell(word: str, value: str) -> None:
    assert tokenize(f"pai {word}") == ["pai", value]


# --- splitting ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "statements"),
    [
        (
            "add file x.py; pai -name tensorflow -Dscript=x.py;",
            ["add file x.py", "pai -name tensorflow -Dscript=x.py"],
        ),
        ("whoami", ["whoami"]),
        ("whoami;;  ; list resources", ["whoami", "list resources"]),
        ("add file 'a;b.py' comment \"x;y\";", ["add file 'a;b.py' comment \"x;y\""]),
        ('use "a\\";b";', ['use "a\\";b"']),
        ("add file x.py comment 'a\\';", ["add file x.py comment 'a\\'"]),
        ("add file x.py \\;y;", ["add file x.py \\;y"]),
        ("pai -name tensorflow\n  -Dscript=x.py;", ["pai -name tensorflow   -Dscript=x.py"]),
        ("add file 'a\nb';", ["add file 'a\nb'"]),
        ("pai -name tensorflow \\\n  -Dscript=x.py;", ["pai -name tensorflow    -Dscript=x.py"]),
        ("-- a comment; not a statement\nwhoami;", ["whoami"]),
        ("# a comment; too\n  # indented\nwhoami;", ["whoami"]),
        ("whoami; -- after; it\nlist resources;", ["whoami", "list resources"]),
        (
            "pai -name tensorflow\n  -- -Dtags=x;\n  -Dscript=x.py;",
            ["pai -name tensorflow    -Dscript=x.py"],
        ),
        ("add file x.py comment 'a\n-- kept';", ["add file x.py comment 'a\n-- kept'"]),
        ("", []),
        ("  \n -- only a comment\n", []),
    ],
    ids=[
        "two-statements",
        "no-final-semicolon",
        "empty-statements-dropped",
        "semicolons-in-quotes",
        "escaped-double-quote",
        "no-escapes-in-single-quotes",
        "escaped-semicolon",
        "multi-line",
        "newline-inside-quotes-kept",
        "backslash-continuation",
        "dash-comment-line",
        "hash-comment-lines",
        "comment-after-statement",
        "comment-line-inside-statement",
        "comment-marker-inside-quotes",
        "empty",
        "comment-only",
    ],
)
def test_split_statements(text: str, statements: list[str]) -> None:
    assert split_statements(text) == statements


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ('pai -name tensorflow -Dscript="x.py;', "double quote"),
        ("add file x.py comment 'oops;", "single quote"),
        ("whoami;\nadd file x.py\n  comment 'a;", "line 3"),
        ('use "a\\";', "double quote"),
    ],
    ids=["double", "single", "line-number", "escaped-closing-quote"],
)
def test_unterminated_quote_is_an_error(text: str, shown: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        split_statements(text)
    assert shown in info.value.message
    assert "Close it with a matching" in info.value.message


@pytest.mark.parametrize(
    ("buffer", "complete"),
    [
        ("whoami;", True),
        ("whoami;  \n", True),
        ("whoami; -- done\n", True),
        (";", True),
        ("whoami", False),
        ("pai -name tensorflow\n", False),
        ("add file x.py; pai -name tensorflow", False),
        ('pai -name tensorflow -Dscript="x.py;\n', False),
        ('pai -name tensorflow -Dscript="x.py;\n";', True),
        ("add file x.py \\;", False),
        ("-- a comment;\n", False),
        ("", False),
    ],
    ids=[
        "terminated",
        "trailing-blank",
        "trailing-comment",
        "lone-semicolon",
        "no-semicolon",
        "first-line-of-multi-line",
        "partial-after-complete",
        "semicolon-in-open-quote",
        "quote-closed-then-terminated",
        "escaped-semicolon",
        "comment-only",
        "empty",
    ],
)
def test_is_complete_for_the_repl(buffer: str, complete: bool) -> None:
    assert is_complete(buffer) is complete


def test_repl_waits_line_by_line_for_the_seed_command() -> None:
    lines = SEED_MNIST_SOFTMAX.splitlines(keepends=True)
    buffers = ["".join(lines[: i + 1]) for i in range(len(lines))]
    assert [is_complete(b) for b in buffers] == [False, False, False, True]


_WORD = st.text(alphabet="abcxyz0123456789_./=", min_size=1, max_size=8)
_SIMPLE = st.lists(_WORD, min_size=1, max_size=5).map(" ".join)


@given(st.lists(_SIMPLE, max_size=6), st.sampled_from([";", "; ", ";\n", " ;\n\n"]))
def test_simple_statements_joined_with_semicolons_split_back(
    statements: list[str], separator: str
) -> None:
    text = separator.join(statements) + (separator if statements else "")
    assert split_statements(text) == statements
    assert is_complete(text) is bool(statements)


_KEYWORD = st.sampled_from(["add", "pai", "use", "status", "kill"])
_QUOTED = st.lists(st.text(max_size=10), max_size=4)


@given(st.lists(st.tuples(_KEYWORD, _QUOTED), min_size=1, max_size=4))
def test_quoted_words_survive_splitting_and_tokenizing(
    statements: list[tuple[str, list[str]]],
) -> None:
    text = ";\n".join(shlex.join([kw, *words]) for kw, words in statements) + ";"
    assert [tokenize(s) for s in split_statements(text)] == [
        [kw, *words] for kw, words in statements
    ]


# --- console statements ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "statement"),
    [
        ("add py train.py", AddResource("py", "train.py")),
        ("Add File ./x.py As y.py", AddResource("file", "./x.py", alias="y.py")),
        (
            "add archive job.tar.gz as job.tar.gz comment 'mnist job; v2' -f",
            AddResource("archive", "job.tar.gz", "job.tar.gz", "mnist job; v2", force=True),
        ),
        ('ADD JAR lib.jar -f comment "x"', AddResource("jar", "lib.jar", comment="x", force=True)),
        ("add file '/tmp/my file.py'", AddResource("file", "/tmp/my file.py")),
        ("list resources", ListResources()),
        ("LIST RESOURCES;", ListResources()),
        ("drop resource mnist_softmax.py", DropResource("mnist_softmax.py")),
        ("desc resource mnist_softmax.py", DescResource("mnist_softmax.py")),
        ("show instances", ShowInstances()),
        ("status j-42", Status("j-42")),
        ("Wait j-42;", Wait("j-42")),
        ("kill J-42", Kill("J-42")),
        ("whoami", WhoAmI()),
        ("use algo_platform", Use("algo_platform")),
        ("-- first\nwhoami\n-- last\n", WhoAmI()),
    ],
    ids=[
        "add-py",
        "add-file-alias-mixed-case",
        "add-archive-all-options",
        "add-jar-options-any-order",
        "add-quoted-path",
        "list-resources",
        "upper-case-with-semicolon",
        "drop-resource",
        "desc-resource",
        "show-instances",
        "status",
        "wait",
        "kill-keeps-id-case",
        "whoami",
        "use",
        "comments-around",
    ],
)
def test_parse_statement(text: str, statement: Statement) -> None:
    assert parse_statement(text) == statement


def test_pai_keyword_is_case_insensitive() -> None:
    statement = parse_statement("PAI -NAME TensorFlow -Dscript=x.py")
    assert statement == Pai(PaiCommand("tensorflow", "tf1", "x.py"))


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("select * from t", "Unknown statement 'select * from t'"),
        ("list", "Unknown statement 'list'"),
        ("drop table t", "Unknown statement 'drop table t'"),
        ("add table t", "Cannot add 'table'"),
        ("add", "Cannot add nothing"),
        ("add file", "needs the path"),
        ("add file as y", "needs the path"),
        ("add file x.py as", "Unexpected 'as'"),
        ("add file x.py -f -f", "Unexpected '-f'"),
        ("add file x.py extra", "Unexpected 'extra'"),
        ("status", "takes exactly one value, got 'nothing'"),
        ("kill a b", "takes exactly one value, got 'a b'"),
        ("whoami now", "takes no values, got 'now'"),
        ("list resources x", "takes no values"),
        ("use 1bad", "Invalid project name '1bad'"),
        ("whoami; whoami", "found 2 statements"),
        (";", "found nothing"),
    ],
    ids=[
        "sql",
        "list-alone",
        "drop-table",
        "add-table",
        "add-alone",
        "add-no-path",
        "add-as-for-path",
        "add-as-no-alias",
        "add-force-twice",
        "add-extra-word",
        "status-no-id",
        "kill-two-ids",
        "whoami-extra",
        "list-extra",
        "use-bad-project",
        "two-statements",
        "empty",
    ],
)
def test_bad_statements_are_errors(text: str, shown: str) -> None:
    assert shown in error_of(text)


def test_unknown_statement_lists_every_accepted_statement() -> None:
    message = error_of("select 1;")
    for syntax in [
        "add file|py|archive|jar",
        "list resources",
        "desc resource",
        "drop resource",
        "pai -name",
        "show instances",
        "status",
        "wait",
        "kill",
        "whoami",
        "use",
    ]:
        assert syntax in message


# --- pai parameters ----------------------------------------------------------------------------


def test_every_accepted_key_reaches_its_field() -> None:
    command = parse_pai(
        [
            "-name=tensorflow1120_ext",
            "-Dscript=file:///home/me/job.tar.gz",
            "-DentryFile=train.py",
            "-Dvolumes= a, ,b ,",
            "-Dbuckets=oss://b1/x/,oss://b2/y/",
            "-DcheckpointDir=oss://b1/ckpt/",
            "-Dtables=odps://p/tables/t",
            "-Doutputs=odps://p/tables/o",
            "-DhyperParameters=oss://b1/hyper_para.txt",
            "-DuserDefinedParameters=--batch_size=10 --name='a b'",
            '-Dcluster={"ps":{"count":1,"cpu":600,"memory":30000},'
            '"worker":{"count":2,"gpu":100,"cpu":800,"memory":30000}}',
            "-DgpuRequired=200",
            "-DjobName=nightly",
        ]
    )
    assert command == PaiCommand(
        framework="tensorflow1120_ext",
        framework_kind="tf1",
        script="file:///home/me/job.tar.gz",
        entry_file="train.py",
        volumes=("a", "b"),
        buckets=("oss://b1/x/", "oss://b2/y/"),
        checkpoint_dir="oss://b1/ckpt/",
        tables=("odps://p/tables/t",),
        outputs=("odps://p/tables/o",),
        hyper_parameters="oss://b1/hyper_para.txt",
        user_defined_parameters=("--batch_size=10", "--name=a b"),
        cluster=ClusterSpec(
            ps_count=1,
            worker_count=2,
            ps_cpu=600,
            ps_memory_mb=30000,
            worker_cpu=800,
            worker_memory_mb=30000,
            worker_gpu=100,
        ),
        gpu_required=200,
        job_name="nightly",
    )
    assert command.gpus == 2


@pytest.mark.parametrize(
    "words",
    [
        ["pai", "-name", "tensorflow", "-Dscript=x.py"],
        ["-name", "tensorflow", "-Dscript=x.py"],
        ["-name=tensorflow", "-D", "script=x.py"],
        ["-Dscript=x.py", "-name", "tensorflow"],
    ],
    ids=["leading-pai", "shell-words", "name-equals-and-spaced-D", "any-order"],
)
def test_cli_word_forms(words: list[str]) -> None:
    assert parse_pai(words) == PaiCommand("tensorflow", "tf1", "x.py")


@pytest.mark.parametrize(
    ("flag", "warning"),
    [
        ("-project=algo_public", "-project algo_public has no effect in liqi"),
        ("-Dtags=dnn", "-Dtags=dnn has no effect in liqi"),
        ("-DmaxHungTimeBeforeGCInSeconds=0", "-DmaxHungTimeBeforeGCInSeconds=0 has no effect"),
        ("-Darn=acs:ram::1:role/aliyunodpspaidefaultrole", "-Darn=acs:ram::1:role/"),
        ("-DossHost=oss-cn-beijing-internal.aliyuncs.com", "-DossHost=oss-cn-beijing-internal"),
    ],
    ids=["project", "tags", "max-hung-time", "arn", "oss-host"],
)
def test_platform_only_keys_are_ignored_with_a_warning(flag: str, warning: str) -> None:
    command = parse_pai(["-name", "tensorflow", "-Dscript=x.py", flag])
    assert len(command.warnings) == 1
    assert command.warnings[0].startswith(warning)
    assert "has no effect in liqi" in command.warnings[0]
    assert command.script == "x.py"


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("tensorflow", "tf1"),
        ("tensorflow121", "tf1"),
        ("tensorflow140", "tf1"),
        ("tensorflow180", "tf1"),
        ("tensorflow1120", "tf1"),
        ("tensorflow1120_ext", "tf1"),
        ("tensorflow1120_cpu_ext", "tf1"),
        ("tensorflow1150", "tf1"),
        ("TensorFlow121", "tf1"),
        ("tensorflow2", "tf2"),
        ("tensorflow210", "tf2"),
        ("tensorflow2150_ext", "tf2"),
    ],
    ids=lambda value: str(value),
)
def test_framework_names(name: str, kind: str) -> None:
    command = parse_pai(["-name", name, "-Dscript=x.py"])
    assert (command.framework, command.framework_kind) == (name.lower(), kind)


@pytest.mark.parametrize(
    "name",
    [
        "pytorch151",
        "pytorch112z",
        "easy_rec_ext",
        "graphlearn",
        "tensorflow3",
        "tensorflow_",
        "tf121",
    ],
)
def test_unknown_framework_lists_accepted_names(name: str) -> None:
    message = error_of(f"pai -name {name} -Dscript=x.py")
    assert repr(name) in message
    for accepted in [
        "tensorflow,",
        "tensorflow1xx",
        "tensorflow121",
        "tensorflow1150",
        "tensorflow2",
    ]:
        assert accepted in message


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("-Dfoo=1", None),
        ("-DworkerCount=2", None),
        ("-DcheckpointdIR=oss://b/", "Did you mean -DcheckpointDir?"),
        ("-Dentryfile=a.py", "Did you mean -DentryFile?"),
        ("-DScript=x.py", "Did you mean -Dscript?"),
        ("-DgpuRequire=100", "Did you mean -DgpuRequired?"),
    ],
    ids=["unknown", "worker-count", "wrong-case", "lower-case", "capitalised", "typo"],
)
def test_unknown_key_lists_every_accepted_key(key: str, hint: str | None) -> None:
    message = error_of(f"pai -name tensorflow -Dscript=x.py {key}")
    assert f"Unknown PAI parameter {key.split('=')[0]}." in message
    for accepted in [
        "-Dscript", "-DentryFile", "-Dvolumes", "-Dbuckets", "-DcheckpointDir", "-Dtables",
        "-Doutputs", "-DhyperParameters", "-DuserDefinedParameters", "-Dcluster",
        "-DgpuRequired", "-DjobName", "-project", "-Dtags", "-DmaxHungTimeBeforeGCInSeconds",
        "-Darn", "-DossHost",
    ]:  # fmt: skip
        assert accepted in message
    assert (hint in message) if hint else ("Did you mean" not in message)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("pai -name tensorflow", "needs -Dscript"),
        ("pai -name tensorflow -Dvolumes=a", 'as in: pai -name tensorflow -Dscript="odps://'),
        ("pai -Dscript=x.py", "needs -name <framework>"),
        ("pai -name", "-name needs a value"),
        ("pai -name -Dscript=x.py", "-name needs a value"),
        ("pai -name tensorflow -name tensorflow2 -Dscript=x.py", "-name is given twice"),
        ("pai -name tensorflow -Dscript=x.py -Dscript=y.py", "-Dscript is given twice"),
        ("pai -name tensorflow -Dscript", "has no value"),
        ("pai -name tensorflow -Dscript=x.py -D", "has no value"),
        ("pai -name tensorflow -Dscript=", "-Dscript is empty"),
        ("pai -name tensorflow -Dscript=x.py -DjobName=", "-DjobName is empty"),
        ("pai -name tensorflow -Dscript=x.py -Dcluster=''", "-Dcluster is empty"),
        ("pai -name tensorflow -Dscript=x.py extra", "Unexpected word 'extra'"),
        ("pai -name tensorflow -Dscript=x.py --verbose", "Unexpected word '--verbose'"),
        ("pai -name tensorflow -Dscript=http://h/x.py", "unknown scheme"),
        ("pai -name tensorflow -Dscript=odps://p/resources/job.tar.gz", "-DentryFile"),
        ("pai -name tensorflow -Dscript=x.py -DgpuRequired=one", "not a whole number"),
        ("pai -name tensorflow -Dscript=x.py -DgpuRequired=-100", "not a whole number"),
        ('pai -name tensorflow -Dscript=x.py -DuserDefinedParameters="--a=\'1"', "cannot be split"),
    ],
    ids=[
        "no-script",
        "no-script-example",
        "no-name",
        "name-without-value",
        "name-followed-by-flag",
        "name-twice",
        "key-twice",
        "key-without-equals",
        "lone-D",
        "empty-script",
        "empty-job-name",
        "empty-cluster",
        "positional-word",
        "double-dash-flag",
        "unknown-script-scheme",
        "archive-without-entry-file",
        "gpu-not-a-number",
        "gpu-negative",
        "user-parameters-open-quote",
    ],
)
def test_bad_pai_commands_are_errors(text: str, shown: str) -> None:
    assert shown in error_of(text)


@pytest.mark.parametrize(
    ("script", "entry_file"),
    [
        ("odps://my_project/resources/training_test.py", None),
        ("file:///home/me/x.py", None),
        ("/home/me/x.py", None),
        ("oss://bucket.oss-cn-beijing-internal.aliyuncs.com/jobs/job.tar.gz", "main.py"),
        ("ODPS://p/resources/x", None),
    ],
    ids=["odps-resource", "file-url", "local-path", "oss-tarball", "scheme-any-case"],
)
def test_accepted_script_forms(script: str, entry_file: str | None) -> None:
    words = ["-name", "tensorflow", f"-Dscript={script}"]
    words += [f"-DentryFile={entry_file}"] if entry_file else []
    command = parse_pai(words)
    assert (command.script, command.entry_file) == (script, entry_file)


@pytest.mark.parametrize(
    ("value", "gpus"),
    [("0", 0), ("100", 1), ("200", 2), ("50", 0), ("150", 1)],
    ids=["cpu", "one", "two", "half", "one-and-a-half"],
)
def test_gpu_required_keeps_the_pai_value(value: str, gpus: int) -> None:
    command = parse_pai(["-name", "tensorflow", "-Dscript=x.py", f"-DgpuRequired={value}"])
    assert (command.gpu_required, command.gpus) == (int(value), gpus)


def test_empty_list_values_are_empty() -> None:
    command = parse_pai(["-name", "tensorflow", "-Dscript=x.py", "-Dvolumes=", "-Dbuckets=,"])
    assert (command.volumes, command.buckets) == ((), ())


def test_parse_pai_text_accepts_the_command_without_pai_or_semicolon() -> None:
    assert parse_pai_text("-name tensorflow\n  -Dscript=x.py") == PaiCommand(
        "tensorflow", "tf1", "x.py"
    )


def test_parse_pai_text_refuses_two_commands() -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_pai_text("pai -name tensorflow -Dscript=x.py; pai -name tensorflow -Dscript=y.py;")
    assert "found 2 statements" in info.value.message


# --- -Dcluster ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "cluster"),
    [
        ('{"worker":{"count":2}}', ClusterSpec(ps_count=0, worker_count=2)),
        ('{"ps":{"count":0},"worker":{"count":1}}', ClusterSpec(ps_count=0, worker_count=1)),
        (
            '{"ps":{"count":1,"cpu":600,"memory":30000},"worker":{"count":2,"gpu":100}}',
            ClusterSpec(ps_count=1, worker_count=2, ps_cpu=600, ps_memory_mb=30000, worker_gpu=100),
        ),
        (' { "ps" : { "count" : 2 } , "worker" : { "count" : 3 } } ', ClusterSpec(2, 3)),
    ],
    ids=["workers-only", "zero-ps", "resources", "blanks"],
)
def test_parse_cluster(value: str, cluster: ClusterSpec) -> None:
    assert parse_cluster(value) == cluster


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("{ps:{count:1}}", "it is not JSON"),
        ('{"ps":{"count":1},"worker":{"count":2}', "it is not JSON"),
        ("[1, 2]", "it is not a JSON object"),
        ('"worker"', "it is not a JSON object"),
        ('{"ps":{"count":1}}', "at least one worker"),
        ('{"worker":{"count":0}}', "at least one worker"),
        ('{"worker":{"count":-1}}', "worker.count must be a whole number of 0 or more, not -1"),
        ('{"worker":{"count":1.5}}', "not 1.5"),
        ('{"worker":{"count":"2"}}', "not '2'"),
        ('{"worker":{"count":true}}', "not True"),
        ('{"ps":{"count":1,"cpu":-600},"worker":{"count":1}}', "ps.cpu must be"),
        ('{"worker":{"cpu":800}}', "'worker' has no \"count\""),
        ('{"worker":2}', "'worker' must be an object"),
        ('{"chief":{"count":1},"worker":{"count":1}}', "unknown role 'chief'"),
        ('{"worker":{"count":1,"disk":10}}', "unknown key 'disk' in 'worker'"),
    ],
    ids=[
        "unquoted-keys",
        "truncated",
        "array",
        "string",
        "no-worker",
        "zero-workers",
        "negative-count",
        "float-count",
        "string-count",
        "bool-count",
        "negative-cpu",
        "no-count",
        "role-not-object",
        "unknown-role",
        "unknown-role-key",
    ],
)
def test_invalid_cluster_json_quotes_it_and_shows_an_example(value: str, problem: str) -> None:
    message = error_of(f"pai -name tensorflow -Dscript=x.py -Dcluster='{value}'")
    assert f"Invalid -Dcluster {value!r}" in message
    assert problem in message
    assert 'for example -Dcluster=\'{"ps":{"count":1},"worker":{"count":2' in message


# --- -DhyperParameters -------------------------------------------------------------------------


def test_hyper_parameters_file() -> None:
    text = (
        "# hyper_para.txt\n"
        "batch_size=10\n"
        "\n"
        "  learning_rate = 0.01  \n"
        "model_dir=oss://bucket/models/?role_arn=a&host=b\n"
        "empty=\n"
        "data.path=/a=b\n"
    )
    assert parse_hyper_parameters(text, "hyper_para.txt") == {
        "batch_size": "10",
        "learning_rate": "0.01",
        "model_dir": "oss://bucket/models/?role_arn=a&host=b",
        "empty": "",
        "data.path": "/a=b",
    }


def test_empty_hyper_parameters_file() -> None:
    assert parse_hyper_parameters("# nothing\n\n", "h.txt") == {}


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("batch_size=10\nlearning_rate 0.01\n", "hyper.txt, line 2: 'learning_rate 0.01'"),
        ("=10\n", "hyper.txt, line 1: '=10' is not a key=value line"),
        ("\n\n--lr=1\n", "hyper.txt, line 3"),
        ("9lives=1\n", "line 1"),
        ("a=1\n# c\na=2\n", "hyper.txt, line 3: 'a' is already set on line 1"),
    ],
    ids=["no-equals", "no-key", "flag-form", "key-starts-with-digit", "duplicate"],
)
def test_malformed_hyper_parameters_name_the_file_and_line(text: str, shown: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_hyper_parameters(text, "hyper.txt")
    assert shown in info.value.message
