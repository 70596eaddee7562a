/*
 * tls.c - TLS for NBD_OPT_STARTTLS with gnutls, configured as in qemu-nbd.
 *
 * Design notes.
 *
 * Configuration.  --object (JSON or QEMU's key=value syntax) and QMP's
 * object-add, both made by object-add (qmp-object.c, objects.c), define
 * tls-creds-x509, tls-creds-psk, authz-simple and authz-list objects;
 * --tls-creds/--tls-authz and nbd-server-start name them by id.  The
 * credentials are loaded when the object is made, so a missing certificate
 * is an error then.  object-del may remove them at any time, as in QEMU:
 * objects are reference counted, the table (under tls_lock) holds one
 * reference, the running server's credentials another, and a handshake
 * takes its own for its duration.  The authz object is looked up by id at
 * each handshake, as QEMU does: once it is deleted, clients are refused.
 *
 * Sessions.  One per connection, made once the server has ACKed STARTTLS.
 * The connection's workers read under read_lock and write under write_lock:
 * at most one thread receives and one sends at a time, which is what gnutls
 * allows on a session.  The server never renegotiates, and a TLS 1.2
 * client's renegotiation attempt is a read error that ends the connection.
 *
 * Peer checks.  With x509 and verify-peer=on (QEMU's default) the client
 * must present a certificate; it is verified against ca-cert.pem and its
 * distinguished name compared with the authz identity inside the handshake
 * (gnutls' verify callback), so a refused client gets a TLS alert, never a
 * session.  With PSK gnutls checks the key; the authz identity, if any, is
 * compared with the PSK username once the handshake is done.
 */
#include "tls.h"

#include "block/block.h"
#include "nbd-server.h"
#include "server/trace.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/x509.h>

/* QEMU's defaults: the gnutls priority, and what it adds for PSK. */
#define DEFAULT_PRIORITY "NORMAL"
#define PSK_PRIORITY ":+ECDHE-PSK:+DHE-PSK:+PSK"
/* A client that stalls in the TLS handshake is dropped (qemu-nbd's
 * default handshake limit). */
#define HANDSHAKE_TIMEOUT_MS (10 * 1000)
/* In a reply, iovecs up to this size are gathered into one TLS record;
 * larger ones go out on their own, so that corking never copies read data. */
#define CORK_MAX (16 * 1024)

typedef enum {
    OBJ_TLS_CREDS_X509,
    OBJ_TLS_CREDS_PSK,
    OBJ_AUTHZ_SIMPLE,
    OBJ_AUTHZ_LIST,
} ObjType;

static const struct {
    const char *name;
    ObjType type;
    const char *props;  /* implemented properties, each between spaces */
} obj_types[] = {
    { "tls-creds-x509", OBJ_TLS_CREDS_X509,
      " id dir endpoint verify-peer priority " },
    /* username only matters to a client; a server refuses it, as QEMU. */
    { "tls-creds-psk", OBJ_TLS_CREDS_PSK,
      " id dir endpoint verify-peer priority username " },
    { "authz-simple", OBJ_AUTHZ_SIMPLE, " id identity " },
    /* and rules.N.match, rules.N.policy, rules.N.format (is_rule_prop) */
    { "authz-list", OBJ_AUTHZ_LIST, " id policy " },
};

struct TlsObject {
    gint refcnt;
    ObjType type;
    const char *type_name;
    GHashTable *props;        /* property -> value, as given */
    bool server;              /* endpoint=server */
    bool verify_peer;
    gnutls_priority_t priority;
    gnutls_certificate_credentials_t x509;
    gnutls_psk_server_credentials_t psk;
    gnutls_dh_params_t dh;    /* from dh-params.pem, if present */
};

static GMutex tls_lock;              /* guards the three below */
static GHashTable *objects;          /* id -> TlsObject * (a reference) */
static TlsObject *creds;             /* the server's (a reference); NULL:
                                      * no TLS */
static char *server_authz;           /* the server's tls-authz, or NULL */

static const char *prop(const TlsObject *o, const char *key)
{
    return g_hash_table_lookup(o->props, key);
}

/* --- parsing --object -------------------------------------------------- */

/* QAPI's spellings of a boolean. */
static bool parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = { "on", "yes", "true", "y" };
    static const char *const no[] = { "off", "no", "false", "n" };

    for (size_t i = 0; i < G_N_ELEMENTS(yes); i++) {
        if (strcmp(v, yes[i]) == 0 || strcmp(v, no[i]) == 0) {
            *out = strcmp(v, yes[i]) == 0;
            return true;
        }
    }
    return false;
}

static void object_unref(gpointer p)
{
    TlsObject *o = p;

    if (!o || !g_atomic_int_dec_and_test(&o->refcnt))
        return;

    if (o->priority)
        gnutls_priority_deinit(o->priority);
    if (o->x509)
        gnutls_certificate_free_credentials(o->x509);
    if (o->psk)
        gnutls_psk_free_server_credentials(o->psk);
    if (o->dh)
        gnutls_dh_params_deinit(o->dh);
    if (o->props)
        g_hash_table_unref(o->props);
    g_free(o);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC(TlsObject, object_unref)

static TlsObject *object_ref(TlsObject *o)
{
    if (o)
        g_atomic_int_inc(&o->refcnt);
    return o;
}

static TlsObject *object_new(void)
{
    TlsObject *o = g_new0(TlsObject, 1);

    o->refcnt = 1;
    o->props = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    return o;
}

static void table_init(void)
{
    g_mutex_lock(&tls_lock);
    if (!objects)
        objects = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                        object_unref);
    g_mutex_unlock(&tls_lock);
}

/* A reference to the object @id, or NULL. */
static TlsObject *lookup(const char *id)
{
    TlsObject *o;

    g_mutex_lock(&tls_lock);
    o = objects && id ? object_ref(g_hash_table_lookup(objects, id)) : NULL;
    g_mutex_unlock(&tls_lock);
    return o;
}

/* authz-list's rules.N.match, rules.N.policy and rules.N.format. */
static bool is_rule_prop(const char *key)
{
    const char *p = key;

    if (!g_str_has_prefix(p, "rules."))
        return false;
    p += strlen("rules.");
    if (!g_ascii_isdigit(*p))
        return false;
    while (g_ascii_isdigit(*p))
        p++;
    return !strcmp(p, ".match") || !strcmp(p, ".policy") ||
           !strcmp(p, ".format");
}

static bool set_type(TlsObject *o, const char *name, GError **errp)
{
    for (size_t i = 0; i < G_N_ELEMENTS(obj_types); i++) {
        if (strcmp(name, obj_types[i].name) == 0) {
            o->type = obj_types[i].type;
            o->type_name = obj_types[i].name;
            return true;
        }
    }
    g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "--object: type '%s' is not supported (only tls-creds-x509, "
                "tls-creds-psk and authz-simple)", name);
    return false;
}

/* Every property is known and well-formed; endpoint and verify-peer are
 * decoded with QEMU's defaults (client, on). */
static bool check_object(TlsObject *o, GError **errp)
{
    const char *props = NULL, *id = prop(o, "id");
    GHashTableIter it;
    gpointer key;

    for (size_t i = 0; i < G_N_ELEMENTS(obj_types); i++) {
        if (obj_types[i].type == o->type)
            props = obj_types[i].props;
    }
    g_hash_table_iter_init(&it, o->props);
    while (g_hash_table_iter_next(&it, &key, NULL)) {
        g_autofree char *spaced = g_strdup_printf(" %s ", (char *)key);
        if (!strstr(props, spaced) &&
            !(o->type == OBJ_AUTHZ_LIST && is_rule_prop(key))) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "--object %s: property '%s' is not supported",
                        o->type_name, (char *)key);
            return false;
        }
    }
    if (!id || !bdrv_id_wellformed(id)) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "--object %s: %s", o->type_name,
                    id ? "'id' must be an identifier" : "'id' is missing");
        return false;
    }
    o->server = g_strcmp0(prop(o, "endpoint"), "server") == 0;
    if (prop(o, "endpoint") && !o->server &&
        strcmp(prop(o, "endpoint"), "client") != 0) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "object '%s': endpoint must be 'server' or 'client'", id);
        return false;
    }
    o->verify_peer = true;
    if (prop(o, "verify-peer") &&
        !parse_bool(prop(o, "verify-peer"), &o->verify_peer)) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "object '%s': verify-peer must be 'on' or 'off'", id);
        return false;
    }
    if (o->type == OBJ_AUTHZ_SIMPLE && !prop(o, "identity")) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "object '%s': 'identity' is missing", id);
        return false;
    }
    return true;
}

/* --- loading credentials ------------------------------------------------- */

static bool gnutls_fail(GError **errp, int ret, const char *what,
                        const char *path)
{
    g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_FAILED,
                "cannot load %s '%s': %s", what, path, gnutls_strerror(ret));
    return false;
}

/* DIR/NAME in *path; an optional file that does not exist gives NULL. */
static bool cred_path(const TlsObject *o, const char *name, bool required,
                      char **path, GError **errp)
{
    /* "DIR/NAME" as QEMU writes it, even for dir= "" */
    g_autofree char *p = g_strdup_printf("%s/%s", prop(o, "dir"), name);

    *path = NULL;
    if (access(p, R_OK) == 0) {
        *path = g_steal_pointer(&p);
        return true;
    }
    if (!required && errno == ENOENT)
        return true;
    g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_FAILED,
                "Unable to access credentials %s: %s", p, g_strerror(errno));
    return false;
}

static bool load_dh_params(TlsObject *o, const char *path, GError **errp)
{
    g_autofree char *pem = NULL;
    gsize len;
    gnutls_datum_t d;
    int ret;

    if (!g_file_get_contents(path, &pem, &len, errp))
        return false;
    d = (gnutls_datum_t){ (unsigned char *)pem, len };
    gnutls_dh_params_init(&o->dh);
    ret = gnutls_dh_params_import_pkcs3(o->dh, &d, GNUTLS_X509_FMT_PEM);
    return ret < 0 ? gnutls_fail(errp, ret, "DH parameters", path) : true;
}

/* QEMU's sanity check: a server certificate outside its validity period
 * is a startup error, not a handshake every client fails. */
static bool check_cert_dates(const char *path, GError **errp)
{
    g_autofree char *pem = NULL;
    gnutls_x509_crt_t crt;
    gnutls_datum_t d;
    time_t now = time(NULL);
    const char *problem = NULL;
    gsize len;

    if (!g_file_get_contents(path, &pem, &len, errp))
        return false;
    d = (gnutls_datum_t){ (unsigned char *)pem, len };
    gnutls_x509_crt_init(&crt);
    if (gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_PEM) == 0) {
        if (gnutls_x509_crt_get_expiration_time(crt) < now)
            problem = "has expired";
        else if (gnutls_x509_crt_get_activation_time(crt) > now)
            problem = "is not yet active";
    }
    gnutls_x509_crt_deinit(crt);
    if (problem)
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_FAILED,
                    "The server certificate %s %s", path, problem);
    return !problem;
}

static int verify_client(gnutls_session_t s);

static bool load_x509(TlsObject *o, GError **errp)
{
    g_autofree char *ca = NULL, *crl = NULL, *cert = NULL, *key = NULL,
                    *dh = NULL;
    int ret;

    if (!cred_path(o, "ca-cert.pem", true, &ca, errp) ||
        !cred_path(o, "ca-crl.pem", false, &crl, errp) ||
        !cred_path(o, "server-cert.pem", true, &cert, errp) ||
        !cred_path(o, "server-key.pem", true, &key, errp) ||
        !cred_path(o, "dh-params.pem", false, &dh, errp))
        return false;
    if (!check_cert_dates(cert, errp))
        return false;
    gnutls_certificate_allocate_credentials(&o->x509);
    ret = gnutls_certificate_set_x509_trust_file(o->x509, ca,
                                                 GNUTLS_X509_FMT_PEM);
    if (ret <= 0)
        return gnutls_fail(errp, ret ? ret : GNUTLS_E_NO_CERTIFICATE_FOUND,
                           "CA certificate", ca);
    if (crl && (ret = gnutls_certificate_set_x509_crl_file(
                    o->x509, crl, GNUTLS_X509_FMT_PEM)) < 0)
        return gnutls_fail(errp, ret, "CA revocation list", crl);
    ret = gnutls_certificate_set_x509_key_file(o->x509, cert, key,
                                               GNUTLS_X509_FMT_PEM);
    if (ret < 0) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_FAILED,
                    "cannot load server certificate '%s' with key '%s': %s",
                    cert, key, gnutls_strerror(ret));
        return false;
    }
    if (dh && !load_dh_params(o, dh, errp))
        return false;
    if (o->dh)
        gnutls_certificate_set_dh_params(o->x509, o->dh);
    else
        gnutls_certificate_set_known_dh_params(o->x509,
                                               GNUTLS_SEC_PARAM_MEDIUM);
    if (o->verify_peer)
        gnutls_certificate_set_verify_function(o->x509, verify_client);
    return true;
}

/* gnutls reads keys.psk at each handshake; check its lines now so that a
 * broken file is a startup error. */
static bool check_psk_file(const char *path, GError **errp)
{
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;
    bool any = false;

    if (!g_file_get_contents(path, &text, NULL, errp))
        return false;
    lines = g_strsplit(text, "\n", -1);
    for (int i = 0; lines[i]; i++) {
        const char *colon = strchr(g_strchomp(lines[i]), ':');
        size_t n = colon ? strspn(colon + 1, "0123456789abcdefABCDEF") : 0;

        if (!*lines[i])
            continue;
        if (!colon || colon == lines[i] || n == 0 || n % 2 ||
            colon[1 + n] != '\0') {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_FAILED,
                        "%s:%d: expected USERNAME:HEXKEY", path, i + 1);
            return false;
        }
        any = true;
    }
    if (!any)
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_FAILED,
                    "%s holds no key", path);
    return any;
}

static bool load_psk(TlsObject *o, GError **errp)
{
    g_autofree char *keys = NULL, *dh = NULL;
    int ret;

    if (!cred_path(o, "keys.psk", true, &keys, errp) ||
        !cred_path(o, "dh-params.pem", false, &dh, errp) ||
        !check_psk_file(keys, errp))
        return false;
    gnutls_psk_allocate_server_credentials(&o->psk);
    ret = gnutls_psk_set_server_credentials_file(o->psk, keys);
    if (ret < 0)
        return gnutls_fail(errp, ret, "PSK file", keys);
    if (dh && !load_dh_params(o, dh, errp))
        return false;
    if (o->dh)
        gnutls_psk_set_server_dh_params(o->psk, o->dh);
    else
        gnutls_psk_set_server_known_dh_params(o->psk, GNUTLS_SEC_PARAM_MEDIUM);
    return true;
}

static bool load_creds(TlsObject *o, GError **errp)
{
    const char *base = prop(o, "priority") ? prop(o, "priority")
                                           : DEFAULT_PRIORITY;
    g_autofree char *prio = g_strconcat(
        base, o->type == OBJ_TLS_CREDS_PSK ? PSK_PRIORITY : "", NULL);
    const char *bad = NULL;
    int ret;

    if (o->type == OBJ_TLS_CREDS_PSK && prop(o, "username")) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "username should not be set when endpoint=server");
        return false;
    }
    if (!prop(o, "dir")) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "Missing 'dir' property value");
        return false;
    }
    if (!(o->type == OBJ_TLS_CREDS_PSK ? load_psk(o, errp)
                                       : load_x509(o, errp)))
        return false;
    /* QEMU 7.2 takes any priority here and fails each TLS session with a
     * bad one; snapnbd says so now, but after the files, as QEMU checks
     * those first. */
    ret = gnutls_priority_init(&o->priority, prio, &bad);
    if (ret < 0) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "object '%s': invalid TLS priority '%s' at '%s'",
                    prop(o, "id"), base, bad ? bad : "");
        return false;
    }
    return true;
}

/* What libnbd will read: DIR/keys.psk, or DIR/ca-cert.pem (the client
 * certificate and key are optional, as in QEMU). */
static bool check_client_creds(TlsObject *o, GError **errp)
{
    g_autofree char *path = NULL;

    if (!prop(o, "dir")) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "Missing 'dir' property value");
        return false;
    }
    return cred_path(o, o->type == OBJ_TLS_CREDS_PSK ? "keys.psk"
                                                     : "ca-cert.pem",
                     true, &path, errp);
}

bool tls_client_creds(const char *id, BdrvTlsCreds *out, GError **errp)
{
    g_autoptr(TlsObject) o = lookup(id);

    if (!o || o->type == OBJ_AUTHZ_SIMPLE || o->type == OBJ_AUTHZ_LIST) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "No TLS credentials with id '%s'", id);
        return false;
    }
    if (o->server) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "Expecting TLS credentials with a client endpoint");
        return false;
    }
    *out = (BdrvTlsCreds){
        .psk = o->type == OBJ_TLS_CREDS_PSK,
        .dir = g_strdup(prop(o, "dir")),
        /* QEMU's default name for a PSK client. */
        .username = g_strdup(prop(o, "username") ? prop(o, "username")
                                                 : "qemu"),
        .verify_peer = o->verify_peer,
    };
    return true;
}

static bool is_authz(const TlsObject *o)
{
    return o->type == OBJ_AUTHZ_SIMPLE || o->type == OBJ_AUTHZ_LIST;
}

/* Checks @o and loads its credentials. */
static bool complete_object(TlsObject *o, GError **errp)
{
    if (!check_object(o, errp))
        return false;
    /* QEMU loads credentials when the object is made, used or not; a
     * client's are loaded by libnbd at each connection (nbd client
     * nodes), so only their files are checked here. */
    if (!is_authz(o) &&
        !(o->server ? load_creds(o, errp) : check_client_creds(o, errp)))
        return false;
    return true;
}

static void insert(TlsObject *o)
{
    g_mutex_lock(&tls_lock);
    g_hash_table_insert(objects, g_strdup(prop(o, "id")), o);
    g_mutex_unlock(&tls_lock);
}

TlsObject *tls_object_new(const char *type, const char *id,
                          GHashTable *props, GError **errp)
{
    g_autoptr(TlsObject) o = object_new();
    GHashTableIter it;
    gpointer k, v;

    table_init();
    if (!set_type(o, type, errp))
        return NULL;
    g_hash_table_iter_init(&it, props);
    while (g_hash_table_iter_next(&it, &k, &v))
        g_hash_table_insert(o->props, g_strdup(k), g_strdup(v));
    g_hash_table_insert(o->props, g_strdup("id"), g_strdup(id));
    return complete_object(o, errp) ? g_steal_pointer(&o) : NULL;
}

void tls_object_insert(TlsObject *o)
{
    insert(o);
}

void tls_object_free(TlsObject *o)
{
    object_unref(o);
}

void tls_object_delete(const char *id)
{
    g_mutex_lock(&tls_lock);
    if (objects)
        g_hash_table_remove(objects, id);
    g_mutex_unlock(&tls_lock);
}

static bool refuse(GError **errp, const char *msg, const char *id)
{
    g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "%s%s%s%s",
                msg, id ? " '" : "", id ? id : "", id ? "'" : "");
    return false;
}

/* --tls-creds and --tls-authz, with qemu-nbd's messages. */
static bool select_objects(const char *creds_id, const char *authz,
                           GError **errp)
{
    g_autoptr(TlsObject) c = lookup(creds_id);
    g_autoptr(TlsObject) a = lookup(authz);

    if (authz && !creds_id)
        return refuse(errp, "--tls-authz is not permitted without "
                            "--tls-creds", NULL);
    if (creds_id && !c)
        return refuse(errp, "No TLS credentials with id", creds_id);
    if (c && is_authz(c))
        return refuse(errp, "Not TLS credentials: object", creds_id);
    if (c && !c->server)
        return refuse(errp, "Expecting TLS credentials with a server "
                            "endpoint: object", creds_id);
    if (authz && (!a || !is_authz(a)))
        return refuse(errp, "No authorization object with id", authz);
    /* QEMU would skip the check silently: refuse instead. */
    if (a && c->type == OBJ_TLS_CREDS_X509 && !c->verify_peer)
        return refuse(errp, "--tls-authz needs verify-peer=on in the TLS "
                            "credentials", creds_id);
    g_mutex_lock(&tls_lock);
    object_unref(creds);
    creds = g_steal_pointer(&c);
    g_free(server_authz);
    server_authz = g_strdup(authz);
    g_mutex_unlock(&tls_lock);
    return true;
}

bool tls_setup(const char *creds_id, const char *authz_id)
{
    g_autoptr(GError) err = NULL;

    table_init();
    if (!select_objects(creds_id, authz_id, &err)) {
        fprintf(stderr, "snapnbd: %s\n", err->message);
        return false;
    }
    return true;
}

bool tls_select(const char *creds_id, const char *authz_id, GError **errp)
{
    table_init();
    return select_objects(creds_id, authz_id, errp);
}

bool tls_enabled(void)
{
    bool on;

    g_mutex_lock(&tls_lock);
    on = creds != NULL;
    g_mutex_unlock(&tls_lock);
    return on;
}

/* --- sessions ---------------------------------------------------------- */

/* What one handshake uses, taken at its start: object-del or a new
 * nbd-server-start cannot pull it away meanwhile. */
typedef struct Handshake {
    TlsObject *creds;
    char *authz_id;      /* NULL: anyone */
} Handshake;

static bool list_allows(TlsObject *list, const char *who)
{
    for (int i = 0;; i++) {
        g_autofree char *key = g_strdup_printf("rules.%d.match", i);
        const char *match = prop(list, key), *policy, *format;

        if (!match)
            break;
        g_free(key);
        key = g_strdup_printf("rules.%d.format", i);
        format = prop(list, key);
        g_free(key);
        key = g_strdup_printf("rules.%d.policy", i);
        policy = prop(list, key);
        if (g_strcmp0(format, "glob") == 0 ? g_pattern_match_simple(match, who)
                                           : strcmp(match, who) == 0)
            return g_strcmp0(policy, "allow") == 0;
    }
    /* QEMU's default policy is deny */
    return g_strcmp0(prop(list, "policy"), "allow") == 0;
}

static bool authorized(const Handshake *h, const char *kind, const char *who)
{
    g_autoptr(TlsObject) a = NULL;
    bool ok;

    if (!h->authz_id)
        return true;
    a = lookup(h->authz_id);
    if (!a || !is_authz(a)) {
        fprintf(stderr, "snapnbd: TLS %s authz check: no authorization "
                        "object with id '%s'\n", kind, h->authz_id);
        return false;
    }
    ok = who && (a->type == OBJ_AUTHZ_SIMPLE
                     ? strcmp(who, prop(a, "identity")) == 0
                     : list_allows(a, who));
    if (!ok)
        fprintf(stderr, "snapnbd: TLS %s authz check for '%s' is denied\n",
                kind, who ? who : "");
    return ok;
}

/* The distinguished name of the client's certificate, as QEMU prints it
 * (gnutls_x509_crt_get_dn), or NULL. */
static char *client_dn(gnutls_session_t s)
{
    unsigned n = 0;
    const gnutls_datum_t *certs = gnutls_certificate_get_peers(s, &n);
    gnutls_x509_crt_t crt;
    size_t len = 0;
    char *dn = NULL;

    if (!certs || n == 0 || gnutls_x509_crt_init(&crt) < 0)
        return NULL;
    if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) >= 0 &&
        gnutls_x509_crt_get_dn(crt, NULL, &len) ==
            GNUTLS_E_SHORT_MEMORY_BUFFER) {
        dn = g_malloc(len);
        if (gnutls_x509_crt_get_dn(crt, dn, &len) < 0)
            g_clear_pointer(&dn, g_free);
    }
    gnutls_x509_crt_deinit(crt);
    return dn;
}

/* gnutls calls this inside the handshake with the client's certificate
 * chain (verify-peer=on); nonzero fails the handshake. */
static int verify_client(gnutls_session_t s)
{
    unsigned status = 0;
    int ret = gnutls_certificate_verify_peers2(s, &status);
    g_autofree char *dn = NULL;
    gnutls_datum_t why;

    if (ret < 0) {
        fprintf(stderr, "snapnbd: TLS client certificate: %s\n",
                gnutls_strerror(ret));
        return -1;
    }
    if (status) {
        if (gnutls_certificate_verification_status_print(
                status, GNUTLS_CRT_X509, &why, 0) >= 0) {
            fprintf(stderr, "snapnbd: TLS client certificate refused: %s\n",
                    why.data);
            gnutls_free(why.data);
        }
        return -1;
    }
    dn = client_dn(s);
    if (!dn) {
        fprintf(stderr, "snapnbd: TLS client certificate has no readable "
                        "distinguished name\n");
        return -1;
    }
    trace(TRACE_NBD_TLS_CLIENT, "TLS client '%s'", dn);
    return authorized(gnutls_session_get_ptr(s), "x509", dn) ? 0 : -1;
}

static int setup_session(gnutls_session_t s, TlsObject *c, int fd)
{
    int ret = gnutls_priority_set(s, c->priority);

    if (ret < 0)
        return ret;
    if (c->type == OBJ_TLS_CREDS_PSK) {
        ret = gnutls_credentials_set(s, GNUTLS_CRD_PSK, c->psk);
    } else {
        ret = gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, c->x509);
        gnutls_certificate_server_set_request(
            s, c->verify_peer ? GNUTLS_CERT_REQUIRE : GNUTLS_CERT_IGNORE);
    }
    gnutls_transport_set_int(s, fd);
    gnutls_handshake_set_timeout(s, HANDSHAKE_TIMEOUT_MS);
    return ret;
}

/* The handshake proper; NULL when it fails (the session is freed). */
static gnutls_session_t handshake(int fd, Handshake *h)
{
    gnutls_session_t s;
    int ret = gnutls_init(&s, GNUTLS_SERVER | GNUTLS_NO_SIGNAL);

    if (ret < 0) {
        fprintf(stderr, "snapnbd: TLS: %s\n", gnutls_strerror(ret));
        return NULL;
    }
    gnutls_session_set_ptr(s, h);
    ret = setup_session(s, h->creds, fd);
    while (ret >= 0 && (ret = gnutls_handshake(s)) < 0 &&
           !gnutls_error_is_fatal(ret))
        ret = 0;
    if (ret < 0) {
        fprintf(stderr, "snapnbd: TLS handshake failed: %s\n",
                gnutls_strerror(ret));
        gnutls_alert_send_appropriate(s, ret);
        gnutls_deinit(s);
        return NULL;
    }
    if (h->creds->type == OBJ_TLS_CREDS_PSK &&
        !authorized(h, "PSK", gnutls_psk_server_get_username(s))) {
        gnutls_alert_send(s, GNUTLS_AL_FATAL, GNUTLS_A_ACCESS_DENIED);
        gnutls_deinit(s);
        return NULL;
    }
    /* gnutls uses the credentials as long as the session lives */
    gnutls_session_set_ptr(s, object_ref(h->creds));
    return s;
}

gnutls_session_t tls_handshake(int fd)
{
    Handshake h;
    gnutls_session_t s;

    g_mutex_lock(&tls_lock);
    h.creds = object_ref(creds);
    h.authz_id = g_strdup(server_authz);
    g_mutex_unlock(&tls_lock);
    if (!h.creds) {
        fprintf(stderr, "snapnbd: TLS: the server has no credentials\n");
        return NULL;
    }
    s = handshake(fd, &h);
    object_unref(h.creds);
    g_free(h.authz_id);
    if (s && trace_enabled[TRACE_NBD_TLS_SESSION]) {
        g_autofree char *desc = gnutls_session_get_desc(s);
        trace(TRACE_NBD_TLS_SESSION, "TLS session %s", desc);
    }
    return s;
}

int tls_read(gnutls_session_t s, void *buf, size_t len)
{
    char *p = buf;

    while (len > 0) {
        ssize_t n = gnutls_record_recv(s, p, len);
        if (n == GNUTLS_E_INTERRUPTED || n == GNUTLS_E_AGAIN)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= n;
    }
    return 0;
}

static int send_all(gnutls_session_t s, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = gnutls_record_send(s, p, len);
        if (n == GNUTLS_E_INTERRUPTED || n == GNUTLS_E_AGAIN)
            continue;
        if (n < 0)
            return -1;
        p += n;
        len -= n;
    }
    return 0;
}

/* Small iovecs (headers) are corked into one record with what follows;
 * a large one flushes them and goes out without being copied. */
int tls_writev(gnutls_session_t s, const struct iovec *iov, int iovcnt)
{
    gnutls_record_cork(s);
    for (int i = 0; i < iovcnt; i++) {
        bool large = iov[i].iov_len > CORK_MAX;
        if (large && gnutls_record_uncork(s, GNUTLS_RECORD_WAIT) < 0)
            return -1;
        if (send_all(s, iov[i].iov_base, iov[i].iov_len) < 0)
            return -1;
        if (large)
            gnutls_record_cork(s);
    }
    return gnutls_record_uncork(s, GNUTLS_RECORD_WAIT) < 0 ? -1 : 0;
}

void tls_close(gnutls_session_t s)
{
    if (!s)
        return;
    gnutls_bye(s, GNUTLS_SHUT_WR); /* the peer may be gone: no matter */
    object_unref(gnutls_session_get_ptr(s));
    gnutls_deinit(s);
}
