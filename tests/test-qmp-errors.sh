#!/usr/bin/env bash
# Malformed and invalid input on the control socket gets QEMU's error
# classes and messages, byte for byte: JSON syntax errors (with the
# lexer's resynchronisation after a bad byte), non-object input, unknown
# and ill-typed request members, unknown commands, missing, unexpected and
# mistyped arguments; ids are echoed back whatever their type; several
# values on one line are several commands.  The socket keeps serving after
# all of it.  When qemu-storage-daemon is installed, the same input is sent
# to it and the replies must be identical (except for QEMU 7.2's bug that
# names a list element 'null' instead of 'enable[0]').
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qmp-functions.sh"

inputs=(
'{"execute": "query-version", "id": "early"}'
'{"execute": "qmp_capabilities", "arguments": {"enable": ["foo"]}}'
'{"execute": "qmp_capabilities"}'
'garbage'
'[]'
'"str"'
'3'
'null'
'{'
'}'
'{"execute": "nope", "id": 7}'
'{"foo": 1}'
'{"execute": 3}'
'{"execute": "quit", "arguments": []}'
'{"execute": "query-version", "arguments": {"x": 1}}'
'{"execute": "query-version", "control": {}}'
'{"execute": "x", "exec-oob": "y"}'
'{"id": 5}'
'{"execute": "blockdev-del"}'
'{"execute": "blockdev-del", "arguments": {"node-name": 3}}'
'{"execute": "blockdev-del", "arguments": {"node-name": "x"}, "id": {"a": [1, 2.5, true, null]}}'
'{"execute": "query-version", "id": 1}{"execute": "query-version", "id": 2}'
'{"execute": "x", "id": [1e300, 1.5, -0.0, 1e25, -9223372036854775808, 2E+2, 1E-7, 100.0, 0.1]}'
'{"execute": "x", "id": 0e1}'
'{"execute": "x", "id": -01}'
'{"execute": "x", "id": 1.}'
'{"execute": "x", "id": 1.e5}'
'{"execute": "x", "id": 1e}'
'{"execute": "x", "id": -}'
'{"execute": "x", "id": %d}'
'{"execute": "x", "id": True}'
'{"execute": "x", "id": tru}'
"{'execute': 'x', 'id': 'it\\'s \"q\"'}"
'{"execute": "x", "id": "\u00e9\u0000\ud83d\ude00\u007f\u001f\/\"\\\b\f\n\r\t%"}'
'{"execute": "x", "id": "\uffff"}'
'{"execute": "x", "id": "\ud800x"}'
'{"execute": "x", "id": "\uD800\u0041"}'
'{"execute": "x", "id": "\uDBFF\uDFFF"}'
'{"execute": "x", "id": "\u12"}'
'{"execute": "x", "id": "\x"}'
'{"execute": "x", "id": {"a": 1, "a": 2}}'
'{"execute": "x", "id": [1 2]}'
'{"execute": "x", "id": [1,]}'
'{"execute": "x", "id": {"a" 1}}'
'{"execute": "x", "id": {"a": 1 "b": 2}}'
'{"execute": "x", "id": {3: 4}}'
'{"execute": "x", "id": {"a": }}'
'[1}]'
':'
$'{"execute": "x", "id": "a\tb"}'
$'{"execute": "x", "id": "a\nb"}'
$'{"execute": "x", "id": "\xff\xfe"}'
$'{"execute": "x", "id": "\xc3"}'
$'{"execute": "x", "id": "\xc0\x80"}'
$'{"execute": "x", "id": "\xed\xa0\x80"}'
$'\xff{"execute": "x", "id": "resync"}'
$'-\x14:'
$'\xe1,'
'{"execute": "query-version", "id": "alive"}'
)

start_qmp "$tmp/qmp" "$tmp/pid"
qmp_raw "$tmp/qmp" "${inputs[@]}" | normalize >"$tmp/out" ||
    fail "the socket broke: $(cat "$tmp/out")"

cat >"$tmp/expected" <<'END'
{"id": "early", "error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}}
{"error": {"class": "GenericError", "desc": "Parameter 'enable[0]' does not accept value 'foo'"}}
{"return": {}}
{"error": {"class": "GenericError", "desc": "JSON parse error, invalid keyword 'garbage'"}}
{"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}
{"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}
{"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}
{"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}
{"error": {"class": "GenericError", "desc": "QMP input lacks member 'execute'"}}
{"id": 7, "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}
{"error": {"class": "GenericError", "desc": "QMP input member 'foo' is unexpected"}}
{"error": {"class": "GenericError", "desc": "QMP input member 'execute' must be a string"}}
{"error": {"class": "GenericError", "desc": "QMP input member 'arguments' must be an object"}}
{"error": {"class": "GenericError", "desc": "Parameter 'x' is unexpected"}}
{"error": {"class": "GenericError", "desc": "QMP input member 'control' is unexpected"}}
{"error": {"class": "GenericError", "desc": "QMP input member 'exec-oob' is unexpected"}}
{"id": 5, "error": {"class": "GenericError", "desc": "QMP input lacks member 'execute'"}}
{"error": {"class": "GenericError", "desc": "Parameter 'node-name' is missing"}}
{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'node-name', expected: string"}}
{"id": {"a": [1, 2.5, true, null]}, "error": {"class": "GenericError", "desc": "Failed to find node with node-name='x'"}}
{"return": {"qemu": Q}, "id": 1}
{"return": {"qemu": Q}, "id": 2}
{"id": [1.0000000000000001e+300, 1.5, -0, 1.0000000000000001e+25, -9223372036854775808, 200, 9.9999999999999995e-08, 100, 0.10000000000000001], "error": {"class": "CommandNotFound", "desc": "The command x has not been found"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, expected separator in dict"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, stray '-01'"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, stray '1.}'"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, stray '1.e'"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, stray '1e}'"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, stray '-}'"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, stray '%'"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, stray 'T'"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, invalid keyword 'tru'"}}
{"id": "it's \"q\"", "error": {"class": "CommandNotFound", "desc": "The command x has not been found"}}
{"id": "\u00E9\u0000\uD83D\uDE00\u007F\u001F/\"\\\b\f\n\r\t%", "error": {"class": "CommandNotFound", "desc": "The command x has not been found"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, \\uffff is not a valid Unicode character"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, \\ud800 is not a valid Unicode character"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, \\uD800 is not a valid Unicode character"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, \\uDBFF\\uDFFF is not a valid Unicode character"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, \\u12\" is not a valid Unicode character"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, invalid escape sequence in string"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, duplicate key"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, expected separator in list"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, missing : in object pair"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, expected separator in dict"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, key is not a string in object"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, expected separator in list"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, stray '\"a\t'"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, stray '\"a\n'"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, stray '\"\uFFFD'"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, stray '\uFFFD'"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, invalid UTF-8 sequence in string"}}
{"id": "\u0000", "error": {"class": "CommandNotFound", "desc": "The command x has not been found"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, invalid UTF-8 sequence in string"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, stray '\uFFFD'"}}
{"id": "resync", "error": {"class": "CommandNotFound", "desc": "The command x has not been found"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, stray '-\u0014'"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, stray '\uFFFD'"}}
{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}
{"return": {"qemu": Q}, "id": "alive"}
END
sed -i 's/"qemu": Q/"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "snapnbd-'"$("$SNAPNBD" -V | cut -d' ' -f2)"'"/' "$tmp/expected"
diff -u "$tmp/expected" "$tmp/out" || fail "replies differ from QEMU's"

# The same input to qemu-storage-daemon gives the same replies.
if start_qsd "$tmp/qsd"; then
    qmp_raw "$tmp/qsd" "${inputs[@]}" |
        sed -e "s/Parameter 'null' does not/Parameter 'enable[0]' does not/" \
            -e 's/"qemu": {[^}]*}, "package": "[^"]*"/"qemu": Q/' >"$tmp/qsd.out"
    sed -e 's/"qemu": {[^}]*}, "package": "[^"]*"/"qemu": Q/' "$tmp/out" >"$tmp/ours"
    diff -u "$tmp/qsd.out" "$tmp/ours" ||
        fail "replies differ from qemu-storage-daemon's"
fi
