#!/usr/bin/env python3
"""qapi-gen.py - turns server/qmp-schema.json into C (run by make).

    qapi-gen.py SCHEMA OUTPUT.c
    qapi-gen.py --types-h SCHEMA qmp-types-gen.h
    qapi-gen.py --types-c SCHEMA qmp-types-gen.c

The output holds:
  - qmp_schema_types[]: every type the schema uses, builtins included, with
    members (a struct's base members first), the discriminator and branches
    of a union, the values of an enum, the element of a list, the branches
    of an alternate: what server/qmp-schema.c checks arguments against;
  - qmp_schema_commands[] / qmp_schema_events[]: name -> argument type;
  - qmp_schema_introspection: the answer of query-qmp-schema, a JSON list of
    SchemaInfo as QEMU 7.2's introspection generator writes it (commands and
    events in schema order, then every type they use; types other than
    builtins and arrays are named by numbers, in the order first used; all
    integer types show as 'int'; optional members have "default": null;
    union branches not written are empty objects).

With --types-h/--types-c, the typed arguments of the commands
(class CTypes): for each command's argument type and every struct, union
and enum it uses, a C struct (Qmp + the type's name, or Qmp + the command
in CamelCase + Args for a command's own members; has_x for an optional x;
enums as C enums with a NULL-terminated name table *_str; structs and
unions by pointer, a union's branch in .u; lists as GPtrArray of pointers
or GArray of scalars; an alternate as its kind and branch; 'any' as the
request's JsonNode),
qmp_decode_T() / qmp_clear_T(), qmp_encode_flat_T() (the struct back as
QEMU's option syntax, "file.driver" keys, for the layers that take it),
and qmp_register_typed_CMD() whose handler receives the decoded struct
(or only errp for a command without arguments): every command is
registered so.  Strings and nodes are borrowed from the request: a
handler keeps copies of what it keeps.

Only the Python standard library: it runs at build time.
"""
import ast
import json
import os
import re
import sys

# builtin name -> (JSON type of introspection, C check kind, range)
BUILTINS = {
    'str': ('string', 'QMP_CHECK_STR', None),
    'null': ('null', 'QMP_CHECK_NULL', None),
    'number': ('number', 'QMP_CHECK_NUMBER', None),
    'bool': ('boolean', 'QMP_CHECK_BOOL', None),
    'any': ('value', 'QMP_CHECK_ANY', None),
    'int': ('int', 'QMP_CHECK_INT', None),
    'int64': ('int', 'QMP_CHECK_INT', None),
    'int8': ('int', 'QMP_CHECK_INT', (-2**7, 2**7 - 1)),
    'int16': ('int', 'QMP_CHECK_INT', (-2**15, 2**15 - 1)),
    'int32': ('int', 'QMP_CHECK_INT', (-2**31, 2**31 - 1)),
    'uint8': ('int', 'QMP_CHECK_UINT', (0, 2**8 - 1)),
    'uint16': ('int', 'QMP_CHECK_UINT', (0, 2**16 - 1)),
    'uint32': ('int', 'QMP_CHECK_UINT', (0, 2**32 - 1)),
    'uint64': ('int', 'QMP_CHECK_UINT', None),
    'size': ('int', 'QMP_CHECK_UINT', None),
}
EMPTY = 'q_empty'


def fail(msg):
    sys.exit('qapi-gen.py: ' + msg)


def parse(path):
    """The schema's top-level expressions, in order."""
    text = open(path, encoding='utf-8').read()
    text = re.sub(r"#[^\n]*", '', text)
    text = re.sub(r'\btrue\b', 'True', text)
    text = re.sub(r'\bfalse\b', 'False', text)
    exprs, depth, start = [], 0, None
    for i, ch in enumerate(text):
        if ch == '{':
            if depth == 0:
                start = i
            depth += 1
        elif ch == '}':
            depth -= 1
            if depth < 0:
                fail('%s: unbalanced }' % path)
            if depth == 0:
                exprs.append(ast.literal_eval(text[start:i + 1]))
        elif depth == 0 and not ch.isspace():
            fail('%s: %r outside an expression' % (path, ch))
    if depth:
        fail('%s: an expression is not closed' % path)
    for e in exprs:
        if not isinstance(e, dict) or len(
                {'command', 'event', 'struct', 'union', 'alternate',
                 'enum'} & set(e)) != 1:
            fail('%s: not a definition: %r' % (path, e))
    return exprs


class Member:
    def __init__(self, name, typ, features=()):
        self.optional = name.startswith('*')
        self.name = name[1:] if self.optional else name
        self.type = typ
        self.features = list(features)


class Type:
    def __init__(self, name, kind):
        self.name, self.kind = name, kind
        self.members, self.values, self.variants = [], [], []
        self.tag = self.element = self.base = None
        self.features = []
        self.union_data = None


class Schema:
    def __init__(self, exprs):
        self.types, self.commands, self.events = {}, [], []
        for b in BUILTINS:
            self.types[b] = Type(b, 'builtin')
        self.types[EMPTY] = Type(EMPTY, 'object')
        for e in exprs:
            self.define(e)
        for t in list(self.types.values()):
            self.resolve(t)
        for c in self.commands + self.events:
            self.ref(c['arg'])
            if c.get('ret'):
                self.ref(c['ret'])

    def members_of(self, data):
        out = []
        for name, v in data.items():
            if isinstance(v, dict):
                out.append(Member(name, self.type_ref(v['type']),
                                  v.get('features', ())))
            else:
                out.append(Member(name, self.type_ref(v)))
        return out

    def type_ref(self, v):
        """A member type: a name, or [name] for a list (named like QEMU's
        NameList)."""
        if isinstance(v, list):
            elem = self.type_ref(v[0])
            name = elem + 'List'
            if name not in self.types:
                t = Type(name, 'array')
                t.element = elem
                self.types[name] = t
            return name
        return v

    def implicit(self, name, data):
        t = Type(name, 'object')
        t.members = self.members_of(data)
        self.types[name] = t
        return name

    def define(self, e):
        if 'command' in e or 'event' in e:
            name = e.get('command') or e.get('event')
            data = e.get('data')
            if isinstance(data, dict):
                arg = self.implicit('q_obj_%s-arg' % name, data)
            else:
                arg = data or EMPTY
            ret = e.get('returns')
            ent = {'name': name, 'arg': arg, 'features': e.get('features', []),
                   'ret': self.type_ref(ret) if ret is not None else EMPTY}
            (self.commands if 'command' in e else self.events).append(ent)
        elif 'enum' in e:
            t = Type(e['enum'], 'enum')
            t.values = list(e['data'])
            t.features = e.get('features', [])
            self.types[t.name] = t
        elif 'struct' in e:
            t = Type(e['struct'], 'object')
            t.base = e.get('base')
            t.members = self.members_of(e.get('data', {}))
            t.features = e.get('features', [])
            self.types[t.name] = t
        elif 'union' in e:
            t = Type(e['union'], 'object')
            base = e['base']
            if isinstance(base, dict):
                base = self.implicit('q_obj_%s-base' % t.name, base)
            t.base = base
            t.tag = e['discriminator']
            t.union_data = e['data']
            t.features = e.get('features', [])
            self.types[t.name] = t
        elif 'alternate' in e:
            t = Type(e['alternate'], 'alternate')
            t.variants = [(k, self.type_ref(v)) for k, v in e['data'].items()]
            t.features = e.get('features', [])
            self.types[t.name] = t
        else:
            fail('unknown expression %r' % e)

    def lookup(self, name):
        if name not in self.types:
            fail("type '%s' is not defined" % name)
        return self.types[name]

    def resolve(self, t):
        """Base members first; a union's branches, one per tag value."""
        if t.base and not getattr(t, 'resolved', False):
            base = self.lookup(t.base)
            self.resolve(base)
            t.members = base.members + t.members
        t.resolved = True
        if t.union_data is not None:
            tag = [m for m in t.members if m.name == t.tag]
            if not tag:
                fail("union %s: no member '%s'" % (t.name, t.tag))
            enum = self.lookup(tag[0].type)
            for case in t.union_data:
                if case not in enum.values:
                    fail('union %s: %s is no %s' % (t.name, case, enum.name))
            t.variants = [(c, t.union_data[c]) for c in t.union_data]
            t.variants += [(v, EMPTY) for v in enum.values
                           if v not in t.union_data]
            t.union_data = None

    def ref(self, name):
        """Checks that @name and what it uses are defined."""
        seen = getattr(self, '_seen', set())
        self._seen = seen
        if name in seen:
            return
        seen.add(name)
        t = self.lookup(name)
        for m in t.members:
            self.ref(m.type)
        for _, v in t.variants:
            self.ref(v)
        if t.element:
            self.ref(t.element)


class Introspection:
    """QEMU's SchemaInfo list, with masked (numbered) type names."""

    def __init__(self, schema):
        self.s, self.names, self.used, self.trees = schema, {}, [], []

    def masked(self, name):
        if name not in self.names:
            self.names[name] = str(len(self.names))
        return self.names[name]

    def use(self, name):
        t = self.s.types[name]
        if t.kind == 'builtin' and BUILTINS[name][0] == 'int':
            name, t = 'int', self.s.types['int']
        elif t.kind == 'array' and self.s.types[t.element].kind == 'builtin' \
                and BUILTINS[t.element][0] == 'int':
            name, t = 'intList', None
            if name not in self.s.types:
                a = Type('intList', 'array')
                a.element = 'int'
                self.s.types[name] = a
            t = self.s.types[name]
        if name not in self.used:
            self.used.append(name)
        if t.kind == 'builtin':
            return name
        if t.kind == 'array':
            return '[' + self.use(t.element) + ']'
        return self.masked(name)

    def tree(self, name, meta, obj, features=()):
        if meta not in ('command', 'event', 'builtin', 'array'):
            name = self.masked(name)
        tree = {'name': name, 'meta-type': meta}
        tree.update(obj)
        if features:
            tree['features'] = list(features)
        self.trees.append(tree)

    def visit_type(self, name):
        t = self.s.types[name]
        if t.kind == 'builtin':
            self.tree(name, 'builtin', {'json-type': BUILTINS[name][0]})
        elif t.kind == 'array':
            elem = self.use(t.element)
            self.tree('[' + elem + ']', 'array', {'element-type': elem})
        elif t.kind == 'enum':
            self.tree(name, 'enum', {'members': [{'name': v}
                                                 for v in t.values],
                                     'values': list(t.values)}, t.features)
        elif t.kind == 'alternate':
            self.tree(name, 'alternate', {
                'members': [{'type': self.use(v)} for _, v in t.variants]},
                t.features)
        else:
            obj = {'members': [self.member(m) for m in t.members]}
            if t.tag:
                obj['tag'] = t.tag
                obj['variants'] = [{'case': c, 'type': self.use(v)}
                                   for c, v in t.variants]
            self.tree(name, 'object', obj, t.features)

    def member(self, m):
        obj = {'name': m.name, 'type': self.use(m.type)}
        if m.optional:
            obj['default'] = None
        if m.features:
            obj['features'] = m.features
        return obj

    def generate(self):
        for c in self.s.commands:
            self.tree(c['name'], 'command',
                      {'arg-type': self.use(c['arg']),
                       'ret-type': self.use(c['ret'])}, c['features'])
        for e in self.s.events:
            self.tree(e['name'], 'event', {'arg-type': self.use(e['arg'])},
                      e['features'])
        i = 0
        while i < len(self.used):
            self.visit_type(self.used[i])
            i += 1
        return self.trees


def c_str(s):
    return '"' + s.replace('\\', '\\\\').replace('"', '\\"') + '"'


def c_source(schema, trees):
    names = sorted(schema.types)
    index = {n: i for i, n in enumerate(names)}
    out = ['/* Generated by server/qmp/qapi-gen.py from server/qmp/qmp-schema.json:',
           ' * do not edit. */', '#include "server/qmp/qmp-schema.h"', '']
    for n in names:
        t = schema.types[n]
        ident = 'ty%d' % index[n]
        if t.members:
            out.append('static const QmpSchemaMember %s_members[] = {' % ident)
            for m in t.members:
                out.append('    { %s, %d, %s },' % (
                    c_str(m.name), index[m.type],
                    'true' if m.optional else 'false'))
            out.append('    { NULL, 0, false },\n};')
        if t.variants:
            out.append('static const QmpSchemaVariant %s_variants[] = {'
                       % ident)
            for c, v in t.variants:
                out.append('    { %s, %d },' % (c_str(c), index[v]))
            out.append('    { NULL, 0 },\n};')
        if t.values:
            out.append('static const char *const %s_values[] = {' % ident)
            out += ['    %s,' % c_str(v) for v in t.values]
            out.append('    NULL,\n};')
    out.append('\nconst QmpSchemaType qmp_schema_types[] = {')
    for n in names:
        t = schema.types[n]
        ident = 'ty%d' % index[n]
        check, rng = 'QMP_CHECK_OBJECT', None
        if t.kind == 'builtin':
            check, rng = BUILTINS[n][1], BUILTINS[n][2]
        elif t.kind == 'enum':
            check = 'QMP_CHECK_ENUM'
        elif t.kind == 'array':
            check = 'QMP_CHECK_ARRAY'
        elif t.kind == 'alternate':
            check = 'QMP_CHECK_ALTERNATE'
        out.append('    { .name = %s, .check = %s,' % (c_str(n), check))
        if rng:
            out.append('      .min = %dLL, .max = %dULL,' % rng)
        if t.members:
            out.append('      .members = %s_members,' % ident)
        if t.tag:
            out.append('      .tag = %s,' % c_str(t.tag))
        if t.variants:
            out.append('      .variants = %s_variants,' % ident)
        if t.values:
            out.append('      .values = %s_values,' % ident)
        if t.element:
            out.append('      .element = %d,' % index[t.element])
        out.append('    },')
    out.append('};')
    out.append('const unsigned qmp_schema_n_types = %d;\n' % len(names))
    for kind, ents in (('commands', schema.commands),
                       ('events', schema.events)):
        out.append('const QmpSchemaEntry qmp_schema_%s[] = {' % kind)
        for c in ents:
            out.append('    { %s, %d },' % (c_str(c['name']),
                                           index[c['arg']]))
        out.append('    { NULL, 0 },\n};')
    text = json.dumps(trees, separators=(',', ':'))
    out.append('\nconst char qmp_schema_introspection[] =')
    for i in range(0, len(text), 70):
        out.append('    %s' % c_str(text[i:i + 70]))
    out.append('    ;')
    return '\n'.join(out) + '\n'


# --- typed arguments (--types-h / --types-c) --------------------------------

# builtin -> (C type, decoder helper in the prelude of the .c)
C_BUILTINS = {
    'str': ('const char *', 'qd_str'),
    'null': ('bool', 'qd_null'),
    'number': ('double', 'qd_number'),
    'bool': ('bool', 'qd_bool'),
    'any': ('JsonNode *', 'qd_any'),
    'int': ('int64_t', 'qd_int64'),
    'int64': ('int64_t', 'qd_int64'),
    'int8': ('int8_t', 'qd_int8'),
    'int16': ('int16_t', 'qd_int16'),
    'int32': ('int32_t', 'qd_int32'),
    'uint8': ('uint8_t', 'qd_uint8'),
    'uint16': ('uint16_t', 'qd_uint16'),
    'uint32': ('uint32_t', 'qd_uint32'),
    'uint64': ('uint64_t', 'qd_uint64'),
    'size': ('uint64_t', 'qd_uint64'),
}
C_KEYWORDS = {'auto', 'break', 'case', 'char', 'const', 'continue',
              'default', 'do', 'double', 'else', 'enum', 'extern', 'float',
              'for', 'goto', 'if', 'inline', 'int', 'long', 'register',
              'restrict', 'return', 'short', 'signed', 'sizeof', 'static',
              'struct', 'switch', 'typedef', 'union', 'unsigned', 'void',
              'volatile', 'while', 'bool', 'true', 'false',
              # macros of the C library and the compiler
              'errno', 'unix', 'linux', 'assert'}

TYPES_PRELUDE = r'''
/* Scalars.  The validator checked every value, so a mismatch here means a
 * caller skipped it: an error, never a crash. */
static bool qd_wrong(const char *name, const char *expected, GError **errp)
{
    qmp_error(errp, "Invalid parameter type for '%s', expected: %s", name,
              expected);
    return false;
}

static bool qd_holds(JsonNode *v, GType type)
{
    return JSON_NODE_HOLDS_VALUE(v) && json_node_get_value_type(v) == type;
}

static bool qd_str(JsonNode *v, const char *name, const char **out,
                   GError **errp)
{
    if (!qd_holds(v, G_TYPE_STRING))
        return qd_wrong(name, "string", errp);
    *out = json_node_get_string(v);
    return true;
}

static G_GNUC_UNUSED bool qd_null(JsonNode *v, const char *name, bool *out,
                                  GError **errp)
{
    *out = true;
    return JSON_NODE_HOLDS_NULL(v) || qd_wrong(name, "null", errp);
}

static G_GNUC_UNUSED bool qd_number(JsonNode *v, const char *name,
                                    double *out, GError **errp)
{
    if (qd_holds(v, G_TYPE_INT64))
        *out = (double)json_node_get_int(v);
    else if (qd_holds(v, G_TYPE_DOUBLE))
        *out = json_node_get_double(v);
    else
        return qd_wrong(name, "number", errp);
    return true;
}

static bool qd_bool(JsonNode *v, const char *name, bool *out, GError **errp)
{
    if (!qd_holds(v, G_TYPE_BOOLEAN))
        return qd_wrong(name, "boolean", errp);
    *out = json_node_get_boolean(v);
    return true;
}

/* any, and alternates: the request's own node, as it is */
static G_GNUC_UNUSED bool qd_any(JsonNode *v, const char *name,
                                 JsonNode **out, GError **errp)
{
    *out = v;
    return true;
}

static bool qd_int64(JsonNode *v, const char *name, int64_t *out,
                     GError **errp)
{
    if (!qd_holds(v, G_TYPE_INT64))
        return qd_wrong(name, "integer", errp);
    *out = json_node_get_int(v);
    return true;
}

/* Sized integers: the validator checked the range. */
#define QD_SIZED(fn, ctype)                                               \
    static G_GNUC_UNUSED bool fn(JsonNode *v, const char *name, ctype *out, \
                                 GError **errp)                           \
    {                                                                     \
        int64_t n;                                                        \
        if (!qd_int64(v, name, &n, errp))                                 \
            return false;                                                 \
        *out = (ctype)n;                                                  \
        return true;                                                      \
    }
QD_SIZED(qd_int8, int8_t)
QD_SIZED(qd_int16, int16_t)
QD_SIZED(qd_int32, int32_t)
QD_SIZED(qd_uint8, uint8_t)
QD_SIZED(qd_uint16, uint16_t)
QD_SIZED(qd_uint32, uint32_t)
QD_SIZED(qd_uint64, uint64_t)

static bool qd_enum(JsonNode *v, const char *name, const char *const *values,
                    int *out, GError **errp)
{
    const char *s;

    if (!qd_str(v, name, &s, errp))
        return false;
    for (int i = 0; values[i]; i++) {
        if (strcmp(values[i], s) == 0) {
            *out = i;
            return true;
        }
    }
    qmp_error(errp, "Parameter '%s' does not accept value '%s'", name, s);
    return false;
}

static bool qd_object(JsonNode *v, const char *name, JsonObject **out,
                      GError **errp)
{
    if (!JSON_NODE_HOLDS_OBJECT(v))
        return qd_wrong(name, "object", errp);
    *out = json_node_get_object(v);
    return true;
}

static G_GNUC_UNUSED bool qd_array(JsonNode *v, const char *name,
                                   JsonArray **out, GError **errp)
{
    if (!JSON_NODE_HOLDS_ARRAY(v))
        return qd_wrong(name, "array", errp);
    *out = json_node_get_array(v);
    return true;
}
'''


FLAT_DECL = r'''/* The flat form of typed arguments (qmp_encode_flat_T): QEMU's option
 * syntax, which bdrv_open and the objects take: "file.driver" -> "qcow2",
 * lists as "rules.0.match", booleans "on"/"off", integers in decimal, null
 * "".  Only members present are written. */
typedef struct QmpFlat {
    GHashTable *keys;  /* key -> value, both owned */
    /* the keys written from an alternate's string branch (a reference by
     * name, e.g. a BlockdevRef's node name), owned; or NULL: not kept */
    GPtrArray *refs;
} QmpFlat;
'''

# builtin -> its flat encoder in the prelude
C_ENCODERS = {
    'str': 'qe_str', 'null': 'qe_null', 'number': 'qe_number',
    'bool': 'qe_bool', 'any': 'qe_any', 'int': 'qe_int', 'int64': 'qe_int',
    'int8': 'qe_int', 'int16': 'qe_int', 'int32': 'qe_int',
    'uint8': 'qe_uint', 'uint16': 'qe_uint', 'uint32': 'qe_uint',
    'uint64': 'qe_uint', 'size': 'qe_uint',
}

ENCODE_PRELUDE = r'''
/* Flat encoders of the builtins (see QmpFlat). */
static void qe_put(const char *key, char *value, QmpFlat *out)
{
    g_hash_table_insert(out->keys, g_strdup(key), value);
}

static void qe_str(const char *v, const char *key, QmpFlat *out)
{
    qe_put(key, g_strdup(v), out);
}

static G_GNUC_UNUSED void qe_null(bool v, const char *key, QmpFlat *out)
{
    qe_put(key, g_strdup(""), out);
}

static G_GNUC_UNUSED void qe_number(double v, const char *key, QmpFlat *out)
{
    char buf[G_ASCII_DTOSTR_BUF_SIZE];

    qe_put(key, g_strdup(g_ascii_dtostr(buf, sizeof(buf), v)), out);
}

static G_GNUC_UNUSED void qe_bool(bool v, const char *key, QmpFlat *out)
{
    qe_put(key, g_strdup(v ? "on" : "off"), out);
}

static G_GNUC_UNUSED void qe_int(int64_t v, const char *key, QmpFlat *out)
{
    qe_put(key, g_strdup_printf("%" G_GINT64_FORMAT, v), out);
}

static G_GNUC_UNUSED void qe_uint(uint64_t v, const char *key, QmpFlat *out)
{
    qe_put(key, g_strdup_printf("%" G_GUINT64_FORMAT, v), out);
}

/* any: lists as key.N, objects as key.member, scalars as above */
static G_GNUC_UNUSED void qe_any(JsonNode *v, const char *key, QmpFlat *out)
{
    if (JSON_NODE_HOLDS_ARRAY(v)) {
        JsonArray *a = json_node_get_array(v);
        for (guint i = 0; i < json_array_get_length(a); i++) {
            g_autofree char *k = g_strdup_printf("%s.%u", key, i);
            qe_any(json_array_get_element(a, i), k, out);
        }
    } else if (JSON_NODE_HOLDS_OBJECT(v)) {
        JsonObject *o = json_node_get_object(v);
        g_autoptr(GList) names = json_object_get_members(o);
        for (GList *l = names; l; l = l->next) {
            g_autofree char *k = g_strconcat(key, ".", l->data, NULL);
            qe_any(json_object_get_member(o, l->data), k, out);
        }
    } else if (qd_holds(v, G_TYPE_BOOLEAN)) {
        qe_bool(json_node_get_boolean(v), key, out);
    } else if (qd_holds(v, G_TYPE_INT64)) {
        qe_int(json_node_get_int(v), key, out);
    } else if (qd_holds(v, G_TYPE_DOUBLE)) {
        qe_number(json_node_get_double(v), key, out);
    } else if (qd_holds(v, G_TYPE_STRING)) {
        qe_str(json_node_get_string(v), key, out);
    } else {
        qe_null(true, key, out);
    }
}

static G_GNUC_UNUSED void qe_ref(const char *key, QmpFlat *out)
{
    if (out->refs)
        g_ptr_array_add(out->refs, g_strdup(key));
}
'''


def c_ident(name):
    s = re.sub(r'[^A-Za-z0-9_]', '_', name)
    return 'q_' + s if s in C_KEYWORDS else s


def camel(name):
    return ''.join(p[:1].upper() + p[1:] for p in re.split(r'[-_.]', name)
                   if p)


def snake(name):
    s = re.sub(r'([a-z0-9])([A-Z])', r'\1_\2', name)
    s = re.sub(r'([A-Z]+)([A-Z][a-z])', r'\1_\2', s)
    return re.sub(r'[^A-Za-z0-9]', '_', s).lower()


class CTypes:
    """C structs, enums, decoders and typed command registration for every
    command's argument type and the types it uses."""

    def __init__(self, schema):
        self.s = schema
        self.order = []
        for c in schema.commands:
            if c['arg'] != EMPTY:
                self.collect(c['arg'])
        self.check_unique()

    def collect(self, name):
        if name in self.order:
            return
        t = self.s.types[name]
        if t.kind == 'builtin':
            return
        self.order.append(name)
        if t.base:
            self.collect(t.base)
        for m in t.members:
            self.collect(m.type)
        for _, v in t.variants:
            if v != EMPTY:
                self.collect(v)
        if t.element:
            self.collect(t.element)

    def cname(self, name):
        """The C name of a schema type (implicit types named after their
        command or union)."""
        m = re.match(r'q_obj_(.*)-(arg|base)$', name)
        if m:
            return 'Qmp' + camel(m.group(1)) + (
                'Args' if m.group(2) == 'arg' else 'Base')
        return 'Qmp' + camel(name)

    def fn(self, name):
        return snake(self.cname(name)[3:])

    def check_unique(self):
        seen = {}
        for n in self.order:
            if self.s.types[n].kind == 'array':
                continue
            c = self.cname(n)
            if c in seen:
                fail('types %s and %s are both %s in C' % (seen[c], n, c))
            seen[c] = n

    def kind(self, name):
        return self.s.types[name].kind

    def ctype(self, name):
        """The C type of a member of type @name."""
        t = self.s.types[name]
        if t.kind == 'builtin':
            c = C_BUILTINS[name][0]
        elif t.kind == 'array':
            c = 'GPtrArray *' if self.boxed(t.element) else 'GArray *'
        elif t.kind == 'enum':
            c = self.cname(name)
        else:
            c = self.cname(name) + ' *'
        return c if c.endswith('*') else c + ' '

    def boxed(self, name):
        """Elements of @name's lists are pointers (a GPtrArray)."""
        return self.ctype(name).endswith('*')

    def decoder(self, name):
        """The function that decodes one value of type @name:
        bool f(JsonNode *v, const char *name, CTYPE *out, GError **errp)."""
        t = self.s.types[name]
        if t.kind == 'builtin':
            return C_BUILTINS[name][1]
        return 'qd_v_' + (snake(t.element) + '_list' if t.kind == 'array'
                          else self.fn(name))

    def clearer(self, name):
        """The function that frees one value of type @name, or None."""
        t = self.s.types[name]
        if t.kind in ('builtin', 'enum'):
            return None
        return 'qd_c_' + (snake(t.element) + '_list' if t.kind == 'array'
                          else self.fn(name))

    # -- the header ----------------------------------------------------------

    def header(self):
        out = ['/* Generated by server/qmp/qapi-gen.py from server/qmp/qmp-schema.json:',
               ' * do not edit. */',
               '#ifndef SNAPNBD_QMP_TYPES_GEN_H',
               '#define SNAPNBD_QMP_TYPES_GEN_H', '',
               '#include <stdbool.h>', '#include <stdint.h>',
               '#include <json-glib/json-glib.h>', '', FLAT_DECL]
        objects = []
        for n in self.order:
            t = self.s.types[n]
            if t.kind == 'enum':
                out += self.enum_decl(n, t.values)
            elif t.kind == 'alternate':
                objects.append(n)
                out += self.enum_decl(n + 'Kind', [k for k, _ in t.variants],
                                      table=False)
                out.append('typedef struct %s %s;' % ((self.cname(n),) * 2))
            elif t.kind == 'object':
                objects.append(n)
                out.append('typedef struct %s %s;' % ((self.cname(n),) * 2))
        out.append('')
        for n in objects:
            out += self.struct_decl(n, self.s.types[n])
        for n in objects:
            if self.s.types[n].base:
                out += self.base_decl(self.s.types[n])
        for c in self.s.commands:
            if c['arg'] == EMPTY:
                out.append('void qmp_register_typed_%s(JsonNode *(*fn)('
                           'GError **errp));' % snake(c['name']))
                continue
            out.append('void qmp_register_typed_%s(JsonNode *(*fn)(const %s *'
                       'args, GError **errp));' % (
                           snake(c['name']), self.cname(c['arg'])))
        out += ['', '#endif']
        return '\n'.join(out) + '\n'

    def enum_decl(self, n, values, table=True):
        c, up = self.cname(n), snake(self.cname(n)).upper()
        out = ['typedef enum %s {' % c]
        out += ['    %s_%s,' % (up, re.sub(r'[^A-Za-z0-9]', '_', v).upper())
                for v in values]
        out += ['    %s__MAX,' % up, '} %s;' % c]
        if table:
            out += ['/* the values\' names, NULL terminated */',
                    'extern const char *const %s_str[];' % snake(c)]
        return out + ['']

    def alternate_decl(self, n, t):
        c = self.cname(n)
        out = ['struct %s {' % c,
               '    %sKind kind; /* the branch the JSON type chose */' % c,
               '    union {']
        out += ['        %s%s;' % (self.ctype(v), c_ident(k))
                for k, v in t.variants]
        out += ['    } u;', '};', '']
        return out

    def struct_decl(self, n, t):
        c = self.cname(n)
        if t.kind == 'alternate':
            return self.alternate_decl(n, t)
        out = ['struct %s {' % c]
        for m in t.members:
            if m.optional:
                out.append('    bool has_%s;' % c_ident(m.name))
            out.append('    %s%s;' % (self.ctype(m.type), c_ident(m.name)))
        branches = [(k, v) for k, v in t.variants if v != EMPTY]
        if branches:
            out.append('    struct { /* the branch of %s (the others NULL) */'
                       % t.tag)
            out += ['        %s *%s;' % (self.cname(v), c_ident(k))
                    for k, v in branches]
            out.append('    } u;')
        if not t.members and not branches:
            out.append('    char q_empty; /* no members */')
        out.append('};')
        f = self.fn(n)
        if t.kind == 'alternate':
            return out
        out += ['bool qmp_decode_%s(JsonObject *o, %s *out, GError **errp);'
                % (f, c),
                '/* Frees what @p holds (not @p itself). */',
                'void qmp_clear_%s(%s *p);' % (f, c),
                'G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(%s, qmp_clear_%s)' % (c, f),
                '/* @p as flat keys, each member\'s name after @prefix ("" or',
                ' * "file."); see QmpFlat. */',
                'void qmp_encode_flat_%s(const %s *p, const char *prefix,'
                % (f, c), '    QmpFlat *out);',
                '']
        return out

    def base_decl(self, t):
        """T's base members (first in T) copied into the base type: one
        function serves the commands that share a base."""
        c, b = self.cname(t.name), self.cname(t.base)
        out = ['/* The members of %s in @out, borrowed from @in: never clear '
               '@out. */' % b,
               'static inline void qmp_%s_base(const %s *in, %s *out)'
               % (self.fn(t.name), c, b), '{']
        for m in self.s.types[t.base].members:
            i = c_ident(m.name)
            if m.optional:
                out.append('    out->has_%s = in->has_%s;' % (i, i))
            out.append('    out->%s = in->%s;' % (i, i))
        return out + ['}', '']

    # -- the decoders --------------------------------------------------------

    def source(self):
        out = ['/* Generated by server/qmp/qapi-gen.py from server/qmp/qmp-schema.json:',
               ' * do not edit. */',
               '#include "server/qmp/qmp-types-gen.h"',
               '#include "server/qmp/qmp.h"', '', '#include <string.h>',
               TYPES_PRELUDE, ENCODE_PRELUDE]
        for n in self.order:
            t = self.s.types[n]
            if t.kind == 'enum':
                out.append('const char *const %s_str[] = {'
                           % snake(self.cname(n)))
                out += ['    %s,' % c_str(v) for v in t.values]
                out.append('    NULL,\n};\n')
        # prototypes first: types refer to each other
        for n in self.order:
            out.append('static G_GNUC_UNUSED bool %s(JsonNode *v, '
                       'const char *name,\n    %s*out, GError **errp);'
                       % (self.decoder(n), self.ctype(n)))
            if self.clearer(n):
                out.append('static G_GNUC_UNUSED void %s(%s*p);' % (
                    self.clearer(n), self.ctype(n)))
        out.append('')
        for n in self.order:
            t = self.s.types[n]
            if t.kind == 'enum':
                out += self.enum_code(n)
            elif t.kind == 'array':
                out += self.list_code(n, t)
            elif t.kind == 'alternate':
                out += self.alternate_code(n, t)
            else:
                out += self.struct_code(n, t)
        for n in self.order:
            out.append('static G_GNUC_UNUSED void %s(%sv, const char *key,'
                       ' QmpFlat *out);' % (self.encoder(n),
                                            self.const_ctype(n)))
        out.append('')
        for n in self.order:
            out += self.encoder_code(n, self.s.types[n])
        for c in self.s.commands:
            out += self.command_code(c)
        return '\n'.join(out) + '\n'

    # -- the flat encoders ---------------------------------------------------

    def const_ctype(self, name):
        """The C type an encoder takes a value of type @name as."""
        t = self.s.types[name]
        if t.kind in ('object', 'alternate'):
            return 'const ' + self.ctype(name)
        return self.ctype(name)

    def encoder(self, name):
        """void f(VALUE, const char *key, QmpFlat *out): one value of type
        @name under @key."""
        t = self.s.types[name]
        if t.kind == 'builtin':
            return C_ENCODERS[name]
        return 'qe_v_' + (snake(t.element) + '_list' if t.kind == 'array'
                          else self.fn(name))

    def encoder_code(self, n, t):
        enc, ct = self.encoder(n), self.const_ctype(n)
        head = ['static void %s(%sv, const char *key, QmpFlat *out)'
                % (enc, ct), '{']
        if t.kind == 'enum':
            return head + ['    qe_str(%s_str[v], key, out);'
                           % snake(self.cname(n)), '}', '']
        if t.kind == 'array':
            e = t.element
            idx = ('(%s)g_ptr_array_index(v, i)' % self.ctype(e)
                   if self.boxed(e) else
                   'g_array_index(v, %s, i)' % self.ctype(e).rstrip())
            return head + [
                '    for (guint i = 0; v && i < v->len; i++) {',
                '        g_autofree char *k = g_strdup_printf("%s.%u", key, '
                'i);',
                '        %s(%s, k, out);' % (self.encoder(e), idx),
                '    }', '}', '']
        if t.kind == 'alternate':
            up = snake(self.cname(n) + 'Kind').upper()
            out = head + ['    switch (v->kind) {']
            for k, b in t.variants:
                out += ['    case %s_%s:' % (
                    up, re.sub(r'[^A-Za-z0-9]', '_', k).upper()),
                        '        %s(v->u.%s, key, out);' % (
                            self.encoder(b), c_ident(k))]
                if b == 'str':
                    out.append('        qe_ref(key, out);')
                out.append('        break;')
            out += ['    default:', '        break;', '    }', '}', '']
            return out
        # struct or union: its members under key + "."
        c, f = self.cname(n), self.fn(n)
        out = head + ['    g_autofree char *prefix = g_strconcat(key, ".", '
                      'NULL);', '',
                      '    qmp_encode_flat_%s(v, prefix, out);' % f, '}', '',
                      'void qmp_encode_flat_%s(const %s *p, const char '
                      '*prefix,' % (f, c), '    QmpFlat *out)', '{']
        for m in t.members:
            i = c_ident(m.name)
            call = ['%s(p->%s, key, out);' % (self.encoder(m.type), i)]
            body = ['g_autofree char *key = g_strconcat(prefix, %s, NULL);'
                    % c_str(m.name), ''] + call
            cond = 'p->has_%s' % i if m.optional else None
            if not m.optional and self.kind(m.type) in ('object',
                                                       'alternate'):
                cond = 'p->%s' % i
            out.append('    if (%s) {' % cond if cond else '    {')
            out += ['        ' + b if b else '' for b in body]
            out.append('    }')
        for k, v in t.variants:
            if v != EMPTY:
                out += ['    if (p->u.%s)' % c_ident(k),
                        '        qmp_encode_flat_%s(p->u.%s, prefix, out);'
                        % (self.fn(v), c_ident(k))]
        out += ['}', '']
        return out

    def enum_code(self, n):
        c = self.cname(n)
        return ['static bool %s(JsonNode *v, const char *name, %s *out,'
                % (self.decoder(n), c),
                '    GError **errp)', '{', '    int i = 0;', '',
                '    if (!qd_enum(v, name, %s_str, &i, errp))'
                % snake(c), '        return false;',
                '    *out = (%s)i;' % c, '    return true;', '}', '']

    def list_code(self, n, t):
        e, ptr = t.element, self.boxed(t.element)
        et = self.ctype(e)
        arr = 'GPtrArray' if ptr else 'GArray'
        new = ('g_ptr_array_new()' if ptr else
               'g_array_new(FALSE, TRUE, sizeof(%s))' % et.rstrip())
        add = ('g_ptr_array_add(*out, (gpointer)e)' if ptr else
               'g_array_append_val(*out, e)')
        out = ['static bool %s(JsonNode *v, const char *name, %s **out,'
               % (self.decoder(n), arr), '    GError **errp)', '{',
               '    JsonArray *a;', '',
               '    if (!qd_array(v, name, &a, errp))', '        return false;',
               '    *out = %s;' % new,
               '    for (guint i = 0; i < json_array_get_length(a); i++) {',
               '        %se = 0;' % et,
               '        bool ok = %s(json_array_get_element(a, i), name, &e, '
               'errp);' % self.decoder(e),
               '        %s;' % add,
               '        if (!ok)', '            return false;', '    }',
               '    return true;', '}', '',
               'static void %s(%s **p)' % (self.clearer(n), arr), '{',
               '    if (!*p)', '        return;']
        if self.clearer(e):
            idx = ('(%s)g_ptr_array_index(*p, i)' % et if ptr else
                   'g_array_index(*p, %s, i)' % et.rstrip())
            out += ['    for (guint i = 0; i < (*p)->len; i++) {',
                    '        %se = %s;' % (et, idx),
                    '        %s(&e);' % self.clearer(e), '    }']
        out += ['    %s(*p, TRUE);' % ('g_ptr_array_free' if ptr
                                       else 'g_array_free'),
                '    *p = NULL;', '}', '']
        return out

    def json_test(self, name):
        """A C test that JsonNode v has the JSON type of @name (an
        alternate's branch), as server/qmp-schema.c chooses."""
        t = self.s.types[name]
        if t.kind == 'enum' or name == 'str':
            return 'qd_holds(v, G_TYPE_STRING)'
        if name == 'null':
            return 'JSON_NODE_HOLDS_NULL(v)'
        if name == 'bool':
            return 'qd_holds(v, G_TYPE_BOOLEAN)'
        if t.kind == 'builtin' and name != 'any':
            return '(qd_holds(v, G_TYPE_INT64) || qd_holds(v, G_TYPE_DOUBLE))'
        if t.kind == 'array':
            return 'JSON_NODE_HOLDS_ARRAY(v)'
        return 'JSON_NODE_HOLDS_OBJECT(v)'

    def alternate_code(self, n, t):
        c = self.cname(n)
        up = snake(c + 'Kind').upper()
        out = ['static bool %s(JsonNode *v, const char *name, %s **out,'
               % (self.decoder(n), c), '    GError **errp)', '{',
               '    *out = g_new0(%s, 1);' % c]
        for k, v in t.variants:
            out += ['    if (%s) {' % self.json_test(v),
                    '        (*out)->kind = %s_%s;' % (
                        up, re.sub(r'[^A-Za-z0-9]', '_', k).upper()),
                    '        return %s(v, name, &(*out)->u.%s, errp);'
                    % (self.decoder(v), c_ident(k)), '    }']
        out += ['    qmp_error(errp, "Invalid parameter type for \'%s\', '
                'expected: %s", name,', '              %s);' % c_str(n),
                '    return false;', '}', '',
                'static void %s(%s **p)' % (self.clearer(n), c), '{',
                '    if (!*p)', '        return;']
        for k, v in t.variants:
            if self.clearer(v):
                out += ['    if ((*p)->kind == %s_%s)' % (
                    up, re.sub(r'[^A-Za-z0-9]', '_', k).upper()),
                    '        %s(&(*p)->u.%s);' % (self.clearer(v),
                                                  c_ident(k))]
        out += ['    g_free(*p);', '    *p = NULL;', '}', '']
        return out

    def member_code(self, m, dest):
        v = '%s(v, %s, &%s, errp)' % (self.decoder(m.type), c_str(m.name),
                                       dest)
        get = '(v = json_object_get_member(o, %s))' % c_str(m.name)
        if m.optional:
            return ['    if (%s) {' % get,
                    '        out->has_%s = true;' % c_ident(m.name),
                    '        if (!%s)' % v, '            goto fail;', '    }']
        return ['    if (!%s) {' % get,
                '        qmp_error(errp, "Parameter \'%%s\' is missing", %s);'
                % c_str(m.name),
                '        goto fail;', '    }',
                '    if (!%s)' % v, '        goto fail;']

    def struct_code(self, n, t):
        c, f = self.cname(n), self.fn(n)
        branches = [(k, v) for k, v in t.variants if v != EMPTY]
        out = ['bool qmp_decode_%s(JsonObject *o, %s *out, GError **errp)'
               % (f, c), '{']
        if t.members:
            out.append('    JsonNode *v;')
        out += ['', '    memset(out, 0, sizeof(*out));',
                '    if (!o)', '        return true;']
        for m in t.members:
            out += self.member_code(m, 'out->' + c_ident(m.name))
        if branches:
            tag = [m for m in t.members if m.name == t.tag][0]
            prefix = snake(self.cname(tag.type)).upper()
            for k, v in branches:
                out += ['    if (out->%s == %s_%s) {' % (
                    c_ident(tag.name), prefix,
                    re.sub(r'[^A-Za-z0-9]', '_', k).upper()),
                        '        out->u.%s = g_new0(%s, 1);'
                        % (c_ident(k), self.cname(v)),
                        '        if (!qmp_decode_%s(o, out->u.%s, errp))'
                        % (self.fn(v), c_ident(k)),
                        '            goto fail;', '    }']
        out += ['    return true;']
        if t.members or branches:
            out += ['fail:', '    qmp_clear_%s(out);' % f, '    return false;']
        out += ['}', '', 'void qmp_clear_%s(%s *p)' % (f, c), '{']
        for m in t.members:
            if self.clearer(m.type):
                out.append('    %s(&p->%s);' % (self.clearer(m.type),
                                                c_ident(m.name)))
        for k, v in branches:
            out.append('    %s(&p->u.%s);' % (self.clearer(v), c_ident(k)))
        out += ['    memset(p, 0, sizeof(*p));', '}', '',
                'static bool %s(JsonNode *v, const char *name, %s **out,'
                % (self.decoder(n), c), '    GError **errp)', '{',
                '    JsonObject *o;', '',
                '    if (!qd_object(v, name, &o, errp))',
                '        return false;',
                '    *out = g_new0(%s, 1);' % c,
                '    return qmp_decode_%s(o, *out, errp);' % f, '}', '',
                'static void %s(%s **p)' % (self.clearer(n), c), '{',
                '    if (!*p)', '        return;',
                '    qmp_clear_%s(*p);' % f, '    g_free(*p);',
                '    *p = NULL;', '}', '']
        return out

    def command_code(self, cmd):
        s = snake(cmd['name'])
        if cmd['arg'] == EMPTY:
            return [
                'static JsonNode *(*typed_%s)(GError **errp);' % s, '',
                'static JsonNode *call_%s(JsonObject *o, GError **errp)' % s,
                '{', '    return typed_%s(errp);' % s, '}', '',
                'void qmp_register_typed_%s(JsonNode *(*fn)(GError **errp))'
                % s, '{', '    typed_%s = fn;' % s,
                '    qmp_register_command_decoder(%s, call_%s);'
                % (c_str(cmd['name']), s), '}', '']
        c, f = self.cname(cmd['arg']), self.fn(cmd['arg'])
        return [
            'static JsonNode *(*typed_%s)(const %s *args, GError **errp);'
            % (s, c), '',
            'static JsonNode *call_%s(JsonObject *o, GError **errp)' % s, '{',
            '    g_auto(%s) args = { 0 };' % c, '',
            '    if (!qmp_decode_%s(o, &args, errp))' % f,
            '        return NULL;',
            '    return typed_%s(&args, errp);' % s, '}', '',
            'void qmp_register_typed_%s(JsonNode *(*fn)(const %s *args, '
            'GError **errp))' % (s, c), '{',
            '    typed_%s = fn;' % s,
            '    qmp_register_command_decoder(%s, call_%s);'
            % (c_str(cmd['name']), s), '}', '']


def main():
    args = sys.argv[1:]
    mode = args.pop(0) if args and args[0].startswith('--') else None
    if len(args) != 2 or mode not in (None, '--types-h', '--types-c'):
        fail('usage: qapi-gen.py [--types-h|--types-c] SCHEMA OUTPUT')
    schema = Schema(parse(args[0]))
    if mode == '--types-h':
        text = CTypes(schema).header()
    elif mode == '--types-c':
        text = CTypes(schema).source()
    else:
        text = c_source(schema, Introspection(schema).generate())
    with open(args[1] + '.tmp', 'w', encoding='utf-8') as f:
        f.write(text)
    os.replace(args[1] + '.tmp', args[1])


if __name__ == '__main__':
    main()
