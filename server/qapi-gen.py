#!/usr/bin/env python3
"""qapi-gen.py - turns server/qmp-schema.json into C (run by make).

    qapi-gen.py SCHEMA OUTPUT.c

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
    out = ['/* Generated by server/qapi-gen.py from server/qmp-schema.json:',
           ' * do not edit. */', '#include "server/qmp-schema.h"', '']
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


def main():
    if len(sys.argv) != 3:
        fail('usage: qapi-gen.py SCHEMA OUTPUT.c')
    schema = Schema(parse(sys.argv[1]))
    trees = Introspection(schema).generate()
    text = c_source(schema, trees)
    with open(sys.argv[2] + '.tmp', 'w', encoding='utf-8') as f:
        f.write(text)
    os.replace(sys.argv[2] + '.tmp', sys.argv[2])


if __name__ == '__main__':
    main()
