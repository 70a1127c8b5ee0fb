/*
 * tenancy_context: the signed tenant context, natively (the tenancy_context extension;
 * see tenancy_context--1.0.sql for the SQL side and the Makefile for building it).
 *
 * The same contract as the PL/pgSQL fallback in crates/tenancy-sdk/sql/runtime.sql
 * (tenancy.enter(token) and tenancy.current_tenant_id()), with two differences:
 *
 *   - The verified tenant lives in this backend's memory, tagged with the local id of the
 *     transaction that entered it. SQL cannot write it (there is no setting to forge), and
 *     it is gone when that transaction ends: current_tenant_id() returns it only while
 *     the backend's local transaction id (MY_LXID()) is still the tagged one, and a
 *     subtransaction that entered it and then rolls back takes it with it.
 *   - Tokens are single-use per backend (on both implementations: a token is accepted
 *     only if it was issued after the last one accepted on this connection, whatever the
 *     SQL around it, COMMIT; BEGIN; … included). Here the mark is backend memory that no
 *     SQL can lower; the PL/pgSQL one keeps it in a setting, which SQL on the backend can
 *     reset or roll back to a value it held before.
 *
 * Nothing here reads a setting of the session: the token arrives as a bound parameter,
 * times come from GetCurrentTimestamp and the key query qualifies every name
 * (tenancy.enter_pooled writes settings, after the token is accepted, and compares the
 * statement timeout in force with the one it is given).
 *
 * Two token versions: v1 is bound to the backend (pid) and single-use per backend by its
 * issue time (the SDK's direct pools). v2 is bound to one transaction: the backend pid and
 * the transaction's start (GetCurrentTransactionStartTimestamp, what the SDK read inside
 * the transaction behind a transaction-mode pooler, where the backend is known only once
 * the transaction runs). Its single-use mark is the start of the last transaction a v2
 * token entered on this backend, also backend memory: a v2 token enters only its own
 * transaction, once, even if the clock steps back. v2 tokens do not touch the v1 mark:
 * behind a pooler a backend sees tokens issued by many clients, in no particular order.
 *
 * v3 is single-use by a nonce and bound to no backend: behind a transaction-mode pooler the
 * SDK signs it before it knows which backend the transaction will get, and the opening
 * needs no round trip of its own. It is accepted only when the library was loaded through
 * shared_preload_libraries, which gives the server a replay registry in shared memory: a
 * fixed table of the nonces of accepted v3 tokens with their expiry, shared by every
 * backend (see "The replay registry" below). A nonce is accepted once, server-wide, until
 * its token expires; a full registry refuses (never accepts). Like v1, an accepted v3
 * token resets session-level settings; it does not touch the v1 mark.
 *
 * A third function exists only here: tenancy.enter_read_only(token), tenancy.enter that
 * also makes the transaction read-only, for the SDK's implicit read-only transactions (see
 * the comment above tenancy_enter_read_only). A fourth, tenancy.enter_pooled (extension
 * version 1.1), is the whole opening of a transaction behind a transaction-mode pooler in
 * one call: enter (or enter_read_only), RESET ALL and the pool's limits as
 * transaction-local settings (see the comment above tenancy_enter_pooled).
 *
 * Version 1.2 adds one function unrelated to the context: tenancy.audit_event_valid_native,
 * the CHECK of tenancy-audit's table of events (see the comment above
 * tenancy_audit_event_valid). Version 1.3 adds tenancy.audit_append, the insertion of one
 * event into that table for the entered tenant without the executor (see the comment above
 * tenancy_audit_append).
 *
 * tenancy.enter is SECURITY DEFINER (owned by tenancy_owner) only so that it can read the
 * HMAC pads from tenancy_private.context_keys, which the runtime role cannot read. Keys
 * are cached per backend for KEY_TTL_SECS; a MAC that fails against a cached key reloads
 * the key once before refusing, so a replaced key takes effect at once.
 *
 * Cost per transaction: HMAC-SHA256 of the token from pad states cached per key (three
 * SHA-256 compressions for a token of under 120 bytes), no table access (after the first
 * call), no setting written. current_tenant_id() is a
 * comparison of two integers.
 */
#include "postgres.h"

#include "access/detoast.h"
#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/dependency.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "datatype/timestamp.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "nodes/primnodes.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"
#include "utils/uuid.h"
#include "utils/xid8.h"

/*
 * Version shims: the same source builds against the server headers of PostgreSQL 14
 * through 18 (PG_VERSION_NUM comes from pg_config.h).
 *
 *   - PostgreSQL 17 moved the backend's local transaction id into PGPROC.vxid
 *     (MyProc->vxid.lxid); before, it was MyProc->lxid.
 *   - PostgreSQL 18 replaced the trailing pg_attribute_noreturn() with the leading
 *     pg_noreturn specifier (C11 _Noreturn) and removed the old macro.
 *   - PostgreSQL 18 can name a module and its version in its magic block
 *     (PG_MODULE_MAGIC_EXT, shown by pg_get_loaded_modules()): the extension's version
 *     whose functions this library provides.
 */
#if PG_VERSION_NUM < 140000
#error "tenancy_context needs PostgreSQL 14 or newer"
#endif

#if PG_VERSION_NUM >= 170000
#define MY_LXID() (MyProc->vxid.lxid)
#else
#define MY_LXID() (MyProc->lxid)
#endif

#if PG_VERSION_NUM >= 180000
#define TENANCY_NORETURN_BEFORE pg_noreturn
#define TENANCY_NORETURN_AFTER
#else
#define TENANCY_NORETURN_BEFORE
#define TENANCY_NORETURN_AFTER pg_attribute_noreturn()
#endif

#if PG_VERSION_NUM >= 180000
PG_MODULE_MAGIC_EXT(.name = "tenancy_context", .version = "1.3");
#else
PG_MODULE_MAGIC;
#endif

#define TOKEN_MAX_LEN 200
#define KID_MAX_LEN 16
#define MAX_KEYS 16
#define KEY_TTL_SECS 30
/* Partitions of the replay registry, each with its own lock. */
#define REPLAY_PARTITIONS 16
/* Slots a nonce may occupy, from its home slot on, within its partition. */
#define REPLAY_PROBE 32
/* The longest a v3 token may still be valid when it is used: it pins a slot that long. */
#define REPLAY_MAX_LIFETIME_SECS 120
#define REPLAY_TRANCHE "tenancy_context"
#define UNIX_EPOCH_OFFSET_USECS \
	((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * USECS_PER_SEC)

typedef struct CachedKey
{
	bool		used;
	char		kid[KID_MAX_LEN + 1];
	/* SHA-256 states after absorbing the HMAC inner and outer pads. */
	uint32		ipad_state[8];
	uint32		opad_state[8];
	TimestampTz loaded_at;
} CachedKey;

static CachedKey keys[MAX_KEYS];

/* The context of the current transaction, valid while ctx_lxid == MY_LXID(). */
static bool ctx_set = false;
static LocalTransactionId ctx_lxid = InvalidLocalTransactionId;
static SubTransactionId ctx_subid = InvalidSubTransactionId;
static pg_uuid_t ctx_tenant;

/* Issue time (µs since the Unix epoch) of the last token accepted on this backend. */
static int64 last_issued = PG_INT64_MIN;
/* Start of the last transaction a v2 token entered on this backend. */
static TimestampTz last_transaction_entered = DT_NOBEGIN;
static bool callback_registered = false;

PG_FUNCTION_INFO_V1(tenancy_enter);
PG_FUNCTION_INFO_V1(tenancy_enter_read_only);
PG_FUNCTION_INFO_V1(tenancy_current_tenant_id);
PG_FUNCTION_INFO_V1(tenancy_enter_pooled);
PG_FUNCTION_INFO_V1(tenancy_audit_event_valid);
PG_FUNCTION_INFO_V1(tenancy_audit_append);

static void
subxact_callback(SubXactEvent event, SubTransactionId mySubid,
				 SubTransactionId parentSubid, void *arg)
{
	if (!ctx_set || ctx_subid != mySubid)
		return;
	if (event == SUBXACT_EVENT_ABORT_SUB)
		ctx_set = false;
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
		ctx_subid = parentSubid;
}

static bool
context_active(void)
{
	return ctx_set && MyProc != NULL && ctx_lxid == MY_LXID();
}

TENANCY_NORETURN_BEFORE static void refuse(const char *problem) TENANCY_NORETURN_AFTER;
static bool parse_int64(const char *s, size_t len, int64 *out);
static int	hexval(char c);

static void
refuse(const char *problem)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
			 errmsg("tenancy: %s", problem)));
}

/*
 * SHA-256 (FIPS 180-4), here rather than through pg_cryptohash for two reasons measured in
 * the tenant_tx benchmark: the OpenSSL EVP context set-up per hash was most of enter()'s
 * cost, and the HMAC pads can be absorbed once per key (the states are cached), which
 * halves the compressions per token. Checked against the Rust signer by every test that
 * enters a context, and against the FIPS "abc" vector when the library loads.
 */
static const uint32 sha256_k[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
};

static const uint32 sha256_iv[8] = {
	0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19
};

#define ROTR32(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void
sha256_compress(uint32 st[8], const uint8 *blk)
{
	uint32		w[64];
	uint32		a = st[0], b = st[1], c = st[2], d = st[3];
	uint32		e = st[4], f = st[5], g = st[6], h = st[7];
	int			i;

	for (i = 0; i < 16; i++)
		w[i] = ((uint32) blk[4 * i] << 24) | ((uint32) blk[4 * i + 1] << 16) |
			((uint32) blk[4 * i + 2] << 8) | (uint32) blk[4 * i + 3];
	for (i = 16; i < 64; i++)
	{
		uint32		s0 = ROTR32(w[i - 15], 7) ^ ROTR32(w[i - 15], 18) ^ (w[i - 15] >> 3);
		uint32		s1 = ROTR32(w[i - 2], 17) ^ ROTR32(w[i - 2], 19) ^ (w[i - 2] >> 10);

		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	for (i = 0; i < 64; i++)
	{
		uint32		t1 = h + (ROTR32(e, 6) ^ ROTR32(e, 11) ^ ROTR32(e, 25)) +
			((e & f) ^ (~e & g)) + sha256_k[i] + w[i];
		uint32		t2 = (ROTR32(a, 2) ^ ROTR32(a, 13) ^ ROTR32(a, 22)) +
			((a & b) ^ (a & c) ^ (b & c));

		h = g;
		g = f;
		f = e;
		e = d + t1;
		d = c;
		c = b;
		b = a;
		a = t1 + t2;
	}
	st[0] += a;
	st[1] += b;
	st[2] += c;
	st[3] += d;
	st[4] += e;
	st[5] += f;
	st[6] += g;
	st[7] += h;
}

/*
 * Finishes a SHA-256 whose state `from` has absorbed `prefix_len` bytes (a multiple of 64)
 * with `len` more bytes of `data`, writing the digest to `out`.
 */
static void
sha256_finish(const uint32 from[8], uint64 prefix_len, const uint8 *data, size_t len, uint8 *out)
{
	uint32		st[8];
	uint8		blk[64];
	uint64		bits = (prefix_len + len) * 8;
	size_t		rem;
	int			i;

	memcpy(st, from, sizeof(st));
	for (; len >= 64; data += 64, len -= 64)
		sha256_compress(st, data);
	rem = len;
	memset(blk, 0, sizeof(blk));
	memcpy(blk, data, rem);
	blk[rem] = 0x80;
	if (rem >= 56)
	{
		sha256_compress(st, blk);
		memset(blk, 0, sizeof(blk));
	}
	for (i = 0; i < 8; i++)
		blk[63 - i] = (uint8) (bits >> (8 * i));
	sha256_compress(st, blk);
	for (i = 0; i < 8; i++)
	{
		out[4 * i] = (uint8) (st[i] >> 24);
		out[4 * i + 1] = (uint8) (st[i] >> 16);
		out[4 * i + 2] = (uint8) (st[i] >> 8);
		out[4 * i + 3] = (uint8) st[i];
	}
}

/* The state after absorbing one 64-byte pad. */
static void
sha256_absorb_pad(const uint8 *pad, uint32 *st)
{
	memcpy(st, sha256_iv, sizeof(sha256_iv));
	sha256_compress(st, pad);
}

/* Reads the pads of `kid` into the cache; NULL when the database has no such key. */
static CachedKey *
load_key(const char *kid)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	CachedKey  *slot = NULL;
	int			i;
	int			rc;

	for (i = 0; i < MAX_KEYS; i++)
		if (keys[i].used && strcmp(keys[i].kid, kid) == 0)
			slot = &keys[i];
	if (slot == NULL)
		for (i = 0; i < MAX_KEYS && slot == NULL; i++)
			if (!keys[i].used)
				slot = &keys[i];
	if (slot == NULL)
	{
		/* More kids than slots: start over (keys are few; this never happens in practice). */
		memset(keys, 0, sizeof(keys));
		slot = &keys[0];
	}
	slot->used = false;

	values[0] = CStringGetTextDatum(kid);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "tenancy: SPI_connect failed");
	rc = SPI_execute_with_args(
		"SELECT ipad, opad FROM tenancy_private.context_keys WHERE kid OPERATOR(pg_catalog.=) $1",
		1, argtypes, values, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "tenancy: reading the context key failed");
	if (SPI_processed == 1)
	{
		bool		isnull1,
					isnull2;
		Datum		d1 = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull1);
		Datum		d2 = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull2);

		if (!isnull1 && !isnull2)
		{
			bytea	   *ip = DatumGetByteaPP(d1);
			bytea	   *op = DatumGetByteaPP(d2);

			if (VARSIZE_ANY_EXHDR(ip) == 64 && VARSIZE_ANY_EXHDR(op) == 64)
			{
				sha256_absorb_pad((const uint8 *) VARDATA_ANY(ip), slot->ipad_state);
				sha256_absorb_pad((const uint8 *) VARDATA_ANY(op), slot->opad_state);
				strlcpy(slot->kid, kid, sizeof(slot->kid));
				slot->loaded_at = GetCurrentTimestamp();
				slot->used = true;
			}
		}
	}
	SPI_finish();
	return slot->used ? slot : NULL;
}

static CachedKey *
cached_key(const char *kid, TimestampTz now)
{
	int			i;

	for (i = 0; i < MAX_KEYS; i++)
		if (keys[i].used && strcmp(keys[i].kid, kid) == 0)
		{
			if (TimestampDifferenceExceeds(keys[i].loaded_at, now, KEY_TTL_SECS * 1000))
				return load_key(kid);
			return &keys[i];
		}
	return load_key(kid);
}

static bool
mac_matches(const CachedKey *key, const char *body, size_t body_len, const char *mac_hex)
{
	static const char hexdigits[] = "0123456789abcdef";
	uint8		inner[32];
	uint8		outer[32];
	unsigned	diff = 0;
	int			i;

	sha256_finish(key->ipad_state, 64, (const uint8 *) body, body_len, inner);
	sha256_finish(key->opad_state, 64, inner, 32, outer);
	/* Constant time: every digit is compared whatever the earlier ones were. */
	for (i = 0; i < 32; i++)
	{
		diff |= (unsigned) (hexdigits[outer[i] >> 4] ^ mac_hex[2 * i]);
		diff |= (unsigned) (hexdigits[outer[i] & 15] ^ mac_hex[2 * i + 1]);
	}
	return diff == 0;
}

/*
 * Parses a v2 token's binding, `<pid>-<16 lowercase hex digits>` (the transaction start as
 * timestamptz_send bytes), into `pid` and `start`; false when it is not one.
 */
static bool
parse_transaction_binding(const char *s, size_t len, int64 *pid, TimestampTz *start)
{
	uint64		v = 0;
	size_t		dash = 0;
	size_t		i;

	while (dash < len && s[dash] != '-')
		dash++;
	if (dash == 0 || dash + 1 + 16 != len || !parse_int64(s, dash, pid))
		return false;
	for (i = dash + 1; i < len; i++)
	{
		int			h = hexval(s[i]);

		if (h < 0)
			return false;
		v = (v << 4) | (uint64) h;
	}
	*start = (TimestampTz) v;
	return true;
}

/* Parses a decimal int64 field of exactly `len` bytes; false when it is not one. */
static bool
parse_int64(const char *s, size_t len, int64 *out)
{
	int64		v = 0;
	bool		neg = false;
	size_t		i = 0;

	if (len == 0 || len > 20)
		return false;
	if (s[0] == '-')
	{
		neg = true;
		i = 1;
		if (len == 1)
			return false;
	}
	for (; i < len; i++)
	{
		if (s[i] < '0' || s[i] > '9')
			return false;
		if (v > (PG_INT64_MAX - (s[i] - '0')) / 10)
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = neg ? -v : v;
	return true;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Parses the canonical lowercase 8-4-4-4-12 form. */
static bool
parse_uuid(const char *s, size_t len, pg_uuid_t *out)
{
	int			nibbles = 0;
	int			hi = 0;
	size_t		i;

	if (len != 36)
		return false;
	for (i = 0; i < 36; i++)
	{
		int			v;

		if (i == 8 || i == 13 || i == 18 || i == 23)
		{
			if (s[i] != '-')
				return false;
			continue;
		}
		v = hexval(s[i]);
		if (v < 0)
			return false;
		if (nibbles % 2 == 0)
			hi = v;
		else
			out->data[nibbles / 2] = (unsigned char) (hi << 4 | v);
		nibbles++;
	}
	return nibbles == 2 * UUID_LEN;
}

/*
 * What RESET ALL does, as part of every SDK transaction's opening: settings changed at
 * session level by earlier transactions on this connection (SET, set_config(..., false))
 * go back to their defaults, so one transaction's SQL cannot leave a statement_timeout,
 * search_path or read-only default to the connection's next user. Settings from the
 * startup packet, the role, the database or the server file are not session-level and
 * stay; transaction_read_only and the other per-transaction settings are excluded by
 * PostgreSQL itself (GUC_NO_RESET_ALL). ResetAllOptions skips every setting not changed
 * in the session, so an unchanged connection costs one pass over the settings array. The
 * change is transactional like RESET ALL's: undone if this transaction rolls back, and
 * then done again by the next opening.
 */
static void
reset_session_settings(void)
{
	ResetAllOptions();
}

/*
 * The replay registry: the nonces of accepted v3 tokens, in shared memory, so that a token
 * is accepted once whichever backend it reaches. Present only when the library is in
 * shared_preload_libraries (the space is requested at server start); its size is
 * tenancy_context.replay_slots (PGC_POSTMASTER). The slots are split into
 * REPLAY_PARTITIONS partitions, each guarded by one LWLock of the named tranche
 * "tenancy_context". A nonce's first 8 bytes pick its partition and the next 8 its home
 * slot there (nonces are random and covered by the MAC: no client can aim at a slot); it
 * is stored in the first reusable slot of the REPLAY_PROBE slots from home on, and looked
 * up in all of them. A slot is reusable once the token it holds has expired (a slot never
 * used has expiry 0): an expired token is refused before the registry is consulted, so
 * forgetting its nonce re-admits nothing. No reusable slot among the probed ones: the
 * token is refused, naming the setting.
 */
typedef struct ReplaySlot
{
	uint8		nonce[16];
	/* Expiry of the token (µs since the Unix epoch); 0 = never used. */
	int64		expires;
} ReplaySlot;

typedef struct ReplayRegistry
{
	int			nparts;
	int			per_part;
	ReplaySlot	slots[FLEXIBLE_ARRAY_MEMBER];
} ReplayRegistry;

static int	replay_slots = 262144;
static ReplayRegistry *registry = NULL;
static LWLockPadded *registry_locks = NULL;

#if PG_VERSION_NUM >= 150000
static shmem_request_hook_type prev_shmem_request_hook = NULL;
#endif
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static Size
registry_size(void)
{
	return add_size(offsetof(ReplayRegistry, slots),
					mul_size(sizeof(ReplaySlot), (Size) replay_slots));
}

/* Requests the registry's shared memory and locks (at server start). */
static void
registry_request(void)
{
#if PG_VERSION_NUM >= 150000
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
#endif
	RequestAddinShmemSpace(registry_size());
	RequestNamedLWLockTranche(REPLAY_TRANCHE, REPLAY_PARTITIONS);
}

/* Creates (in the postmaster) or attaches to the registry. */
static void
registry_startup(void)
{
	bool		found;
	ReplayRegistry *r;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	r = (ReplayRegistry *) ShmemInitStruct("tenancy_context replay registry", registry_size(), &found);
	if (!found)
	{
		memset(r, 0, registry_size());
		r->nparts = Min(REPLAY_PARTITIONS, replay_slots);
		r->per_part = replay_slots / r->nparts;
	}
	LWLockRelease(AddinShmemInitLock);
	registry_locks = GetNamedLWLockTranche(REPLAY_TRANCHE);
	registry = r;
}

/*
 * Records the nonce of a v3 token that expires at `expires` (µs since the Unix epoch;
 * already checked to be no earlier than `now_unix`). Refuses a nonce already recorded and
 * unexpired (a replay), and refuses when no slot is free; the caller has not changed
 * anything yet.
 */
static void
registry_use(const uint8 *nonce, int64 expires, int64 now_unix)
{
	uint64		h1,
				h2;
	int			part,
				per,
				window,
				home,
				i;
	ReplaySlot *base;
	ReplaySlot *free_slot = NULL;
	bool		replayed = false;

	memcpy(&h1, nonce, sizeof(h1));
	memcpy(&h2, nonce + 8, sizeof(h2));
	part = (int) (h1 % (uint64) registry->nparts);
	per = registry->per_part;
	window = Min(per, REPLAY_PROBE);
	home = (int) (h2 % (uint64) per);
	base = registry->slots + (Size) part * per;

	LWLockAcquire(&registry_locks[part].lock, LW_EXCLUSIVE);
	for (i = 0; i < window; i++)
	{
		ReplaySlot *s = &base[(home + i) % per];

		if (s->expires < now_unix)
		{
			if (free_slot == NULL)
				free_slot = s;
			continue;
		}
		if (memcmp(s->nonce, nonce, sizeof(s->nonce)) == 0)
		{
			replayed = true;
			break;
		}
	}
	if (!replayed && free_slot != NULL)
	{
		memcpy(free_slot->nonce, nonce, sizeof(free_slot->nonce));
		free_slot->expires = expires;
	}
	LWLockRelease(&registry_locks[part].lock);
	if (replayed)
		refuse("tenant context token was already used");
	if (free_slot == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("tenancy: the replay registry is full; tenant context token refused"),
				 errhint("Raise tenancy_context.replay_slots (now %d; takes effect at restart) above the peak number of transactions per token lifetime.",
						 replay_slots)));
}

/* Parses 32 lowercase hex digits into 16 bytes; false when it is not that. */
static bool
parse_nonce(const char *s, size_t len, uint8 *out)
{
	size_t		i;

	if (len != 32)
		return false;
	for (i = 0; i < 16; i++)
	{
		int			hi = hexval(s[2 * i]);
		int			lo = hexval(s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return false;
		out[i] = (uint8) (hi << 4 | lo);
	}
	return true;
}

void		_PG_init(void);

/* Refuses to load if SHA-256 does not give the FIPS 180-4 digest of "abc". */
void
_PG_init(void)
{
	static const uint8 expected[32] = {
		0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
		0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad
	};
	uint8		got[32];

	sha256_finish(sha256_iv, 0, (const uint8 *) "abc", 3, got);
	if (memcmp(got, expected, sizeof(got)) != 0)
		elog(ERROR, "tenancy: SHA-256 self-test failed; the library is not usable");

	/* The replay registry exists only when the library is preloaded at server start. */
	if (!process_shared_preload_libraries_in_progress)
		return;
	DefineCustomIntVariable("tenancy_context.replay_slots",
							"Slots of the replay registry of single-use (v3) tenant context tokens.",
							"Each accepted v3 token holds a slot until it expires.",
							&replay_slots,
							262144,
							1,
							INT_MAX / (int) sizeof(ReplaySlot),
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);
#if PG_VERSION_NUM >= 150000
	MarkGUCPrefixReserved("tenancy_context");
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = registry_request;
#else
	EmitWarningsOnPlaceholders("tenancy_context");
	registry_request();
#endif
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = registry_startup;
}

/*
 * Verifies the token in argument 0 and enters its tenant's context, making the transaction
 * read-only too when `read_only` (top level only, see tenancy_enter_read_only); returns the
 * tenant. Any problem is an ERROR (28000) raised before anything is changed: a refused
 * token leaves the context, the single-use mark, the transaction's read-only state and the
 * session's settings as they were. An accepted v1 or v3 token also resets session-level
 * settings (a v2 opening resets them itself, before it sets its transaction's limits),
 * and so does any accepted token when `always_reset` (tenancy.enter_pooled).
 * token: v1.<kid>.<tenant uuid>.<backend pid>.<issued µs>.<expires µs>.<hmac hex>
 *    or  v2.<kid>.<tenant uuid>.<backend pid>-<transaction start hex>.<issued µs>.<expires µs>.<hmac hex>
 *    or  v3.<kid>.<tenant uuid>.<nonce: 32 hex digits>.<issued µs>.<expires µs>.<hmac hex>
 */
static pg_uuid_t *
enter_context(FunctionCallInfo fcinfo, bool read_only, bool always_reset)
{
	text	   *arg;
	const char *tok;
	size_t		len;
	const char *field[7];
	size_t		flen[7];
	char		kid[KID_MAX_LEN + 1];
	int			n = 0;
	size_t		i,
				start = 0;
	int64		pid = 0,
				issued,
				expires,
				now_unix;
	TimestampTz now;
	CachedKey  *key;
	pg_uuid_t	tenant;
	pg_uuid_t  *result;
	TimestampTz xact_start = 0;
	bool		per_transaction;
	bool		single_use = false;
	uint8		nonce[16];

	if (!callback_registered)
	{
		RegisterSubXactCallback(subxact_callback, NULL);
		callback_registered = true;
	}
	if (read_only && GetCurrentTransactionNestLevel() > 1)
		refuse("tenancy.enter_read_only cannot be called inside a subtransaction");
	if (PG_ARGISNULL(0))
		refuse("malformed tenant context token");
	arg = PG_GETARG_TEXT_PP(0);
	tok = VARDATA_ANY(arg);
	len = VARSIZE_ANY_EXHDR(arg);
	if (len > TOKEN_MAX_LEN)
		refuse("malformed tenant context token");
	for (i = 0; i <= len; i++)
	{
		if (i == len || tok[i] == '.')
		{
			if (n == 7)
				refuse("malformed tenant context token");
			field[n] = tok + start;
			flen[n] = i - start;
			n++;
			start = i + 1;
			continue;
		}
		if (!((tok[i] >= 'a' && tok[i] <= 'z') || (tok[i] >= '0' && tok[i] <= '9') || tok[i] == '-'))
			refuse("malformed tenant context token");
	}
	if (n != 7 || flen[0] != 2 || flen[6] != 64 || flen[1] == 0 || flen[1] > KID_MAX_LEN)
		refuse("malformed tenant context token");
	if (memcmp(field[0], "v1", 2) == 0)
		per_transaction = false;
	else if (memcmp(field[0], "v2", 2) == 0)
		per_transaction = true;
	else if (memcmp(field[0], "v3", 2) == 0)
	{
		per_transaction = false;
		single_use = true;
	}
	else
		refuse("malformed tenant context token");
	if (context_active())
		refuse("this transaction already has a tenant context");

	memcpy(kid, field[1], flen[1]);
	kid[flen[1]] = '\0';
	now = GetCurrentTimestamp();
	key = cached_key(kid, now);
	if (key == NULL)
		refuse("tenant context token signed with an unknown key");
	/* The MAC covers everything before the last dot. */
	if (!mac_matches(key, tok, len - 65, field[6]))
	{
		/* The key may have been replaced since it was cached: reload it once. */
		key = load_key(kid);
		if (key == NULL)
			refuse("tenant context token signed with an unknown key");
		if (!mac_matches(key, tok, len - 65, field[6]))
			refuse("tenant context token signature does not verify");
	}
	/* Signed fields only from here on; the signer writes them canonically. */
	if (!parse_uuid(field[2], flen[2], &tenant) ||
		(single_use ? !parse_nonce(field[3], flen[3], nonce)
		 : per_transaction ? !parse_transaction_binding(field[3], flen[3], &pid, &xact_start)
		 : !parse_int64(field[3], flen[3], &pid)) ||
		!parse_int64(field[4], flen[4], &issued) ||
		!parse_int64(field[5], flen[5], &expires))
		refuse("malformed tenant context token");
	if (!per_transaction && !single_use && pid != MyProcPid)
		refuse("tenant context token was issued for another connection");
	if (per_transaction && (pid != MyProcPid || xact_start != GetCurrentTransactionStartTimestamp()))
		refuse("tenant context token was issued for another transaction");
	now_unix = now + UNIX_EPOCH_OFFSET_USECS;
	if (expires < now_unix)
		refuse("tenant context token has expired");
	if (!per_transaction && !single_use && issued <= last_issued)
		refuse("tenant context token was already used on this connection");
	if (per_transaction && xact_start <= last_transaction_entered)
		refuse("tenant context token was already used on this connection");
	if (single_use)
	{
		if (registry == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					 errmsg("tenancy: single-use (v3) tenant context tokens need the replay registry, which this server does not have"),
					 errhint("Add tenancy_context to shared_preload_libraries and restart the server.")));
		if (expires - now_unix > (int64) REPLAY_MAX_LIFETIME_SECS * USECS_PER_SEC)
			refuse("tenant context token lives too long for the replay registry (over 120 s)");
		/* The last check: from here on nothing is refused, and the nonce is used up. */
		registry_use(nonce, expires, now_unix);
	}

	/* Transactional: undone with the rest if this transaction aborts (out of memory). */
	if (!per_transaction || always_reset)
		reset_session_settings();

	/* Allocated first: nothing below can fail, so either all of it happens or none. */
	result = (pg_uuid_t *) palloc(sizeof(pg_uuid_t));
	*result = tenant;

	if (per_transaction)
		last_transaction_entered = xact_start;
	else if (!single_use)
		last_issued = issued;
	ctx_tenant = tenant;
	ctx_lxid = MY_LXID();
	ctx_subid = GetCurrentSubTransactionId();
	ctx_set = true;
	if (read_only)
		XactReadOnly = true;
	return result;
}

/* tenancy.enter(token text) RETURNS uuid */
Datum
tenancy_enter(PG_FUNCTION_ARGS)
{
	PG_RETURN_UUID_P(enter_context(fcinfo, false, false));
}

/*
 * tenancy.enter_read_only(token text) RETURNS uuid: tenancy.enter, and the transaction is
 * read-only from here on, as after set_config('transaction_read_only', 'on', true). The
 * SDK's implicit read-only transactions open with it: one function call and no setting
 * written, where set_config cost a second call plus a GUC save and restore
 * (AtEOXact_GUC) per transaction. It writes XactReadOnly, the variable behind the
 * transaction_read_only setting, directly. Why that is safe:
 *
 *   - Making a transaction read-only is always allowed; PostgreSQL only restricts the other
 *     direction (check_transaction_read_only refuses read-write inside a subtransaction of
 *     a read-only transaction, after the transaction's first snapshot, which this
 *     statement has taken, and during recovery). So nothing that SET TRANSACTION or
 *     set_config could do afterwards makes the transaction writable again. Bool settings
 *     are shown and saved from the variable itself, so SHOW transaction_read_only says on,
 *     a later write fails with 25006, and a later savepoint saves "on" when it starts
 *     (prevXactReadOnly) and restores it when it ends.
 *   - It is set only after the token verified (in enter_context, after every check):
 *     a refused token changes nothing, although its ERROR aborts the transaction anyway.
 *   - Nothing has to be restored: StartTransaction sets XactReadOnly to
 *     default_transaction_read_only for every transaction, so the connection's next
 *     transaction is read-write again, like the context it ends with. (COMMIT AND CHAIN
 *     carries it into the chained transaction, as it would the setting.)
 *   - Subtransactions: refused, before the token is looked at. The SDK calls it only as
 *     the first statement of an implicit transaction, at top level. In a subtransaction
 *     the read-only mode would not last: when a subtransaction ends, committed or rolled
 *     back, xact.c restores the XactReadOnly it started with (set_config behaves the same
 *     way), while a context entered in it survives RELEASE SAVEPOINT. A context in a
 *     read-write transaction is what tenancy.enter gives anyway, so that would grant
 *     nothing new, but the function's one promise (the whole transaction is read-only)
 *     would not hold. tenancy.enter stays allowed in a subtransaction.
 *   - Parallel workers get no read-only state from the leader on PostgreSQL 15, and did
 *     not with set_config either: checked on 15.20 with force_parallel_mode, a worker's
 *     current_setting('transaction_read_only') is off after both (ParallelWorkerMain
 *     restores settings before StartParallelWorkerTransaction, whose StartTransaction
 *     resets XactReadOnly; and SerializeGUCState skips settings still at their default
 *     source, as a direct write leaves this one, so releases that restore settings later
 *     would still show off here). That grants nothing: a parallel worker cannot write in
 *     any transaction (parallel mode refuses XIDs and tuple writes), and the leader, whose
 *     XactReadOnly is set, checks each statement's writes (ExecCheckXactReadOnly,
 *     PreventCommandIfReadOnly) before any worker starts. The function itself is
 *     PARALLEL UNSAFE (the default), so it never runs in a worker.
 */
Datum
tenancy_enter_read_only(PG_FUNCTION_ARGS)
{
	PG_RETURN_UUID_P(enter_context(fcinfo, true, false));
}

/*
 * Starts this statement's timeout afresh with `ms` (0: none), as the next statement's
 * would start with statement_timeout = ms. A statement's timer starts with the
 * statement_timeout in force when its first message arrives (its Parse), which behind a
 * pooler may be a role default or a value an earlier transaction on this backend left
 * (1 ms): the work of tenancy.enter_pooled and the rest of its statement run under the
 * pool's timeout instead. Only the timer of this statement: the setting itself is the
 * transaction's (set after the token is accepted).
 */
static void
restart_statement_timeout(int ms)
{
	bool		active = get_timeout_active(STATEMENT_TIMEOUT);

	/* Started with this very value at the statement's first message: nothing to do. */
	if (ms > 0 && active && StatementTimeout == ms)
		return;
	if (active)
		disable_timeout(STATEMENT_TIMEOUT, false);
	if (ms > 0)
		enable_timeout_after(STATEMENT_TIMEOUT, ms);
}

/* Sets `name` to `value` for the rest of the transaction, as set_config(name, value, true). */
static void
set_local(const char *name, const char *value)
{
	(void) set_config_option(name, value, PGC_USERSET, PGC_S_SESSION, GUC_ACTION_LOCAL,
							 true, ERROR, false);
}

/* Sets the millisecond setting `name` to argument `arg` (skipped when NULL). */
static void
set_local_ms(FunctionCallInfo fcinfo, int arg, const char *name)
{
	char		buf[16];

	if (PG_ARGISNULL(arg))
		return;
	snprintf(buf, sizeof(buf), "%d", PG_GETARG_INT32(arg));
	set_local(name, buf);
}

/*
 * tenancy.enter_pooled(token text, read_only bool, statement_timeout int4,
 *                      lock_timeout int4, idle_in_transaction_timeout int4,
 *                      transaction_timeout int4, search_path text) RETURNS int4
 *
 * The whole opening of a transaction behind a transaction-mode pooler in one call, after
 * BEGIN (or first in an implicit transaction): tenancy.enter (read_only:
 * tenancy.enter_read_only, top level only), RESET ALL whatever the token's version, then
 * the pool's limits as transaction-local settings, as set_config(…, true) would set them:
 * statement_timeout, lock_timeout, idle_in_transaction_session_timeout and
 * transaction_timeout in milliseconds (a NULL one is left as RESET ALL left it),
 * row_security = on, client_min_messages = notice, and search_path (NULL: left). Returns
 * the backend's pid, which the SDK's watchdog needs (the pooler picked the backend).
 *
 * One call where the SQL opening had six (the enter and five set_config, each looked up,
 * permission-checked and set up per transaction, since behind a pooler nothing stays
 * prepared) and no statement of its own for the statement timeout: this statement's
 * timer is started again with the pool's value before anything else, so a 1 ms role
 * default or leftover can only reach the parsing of this one short statement (as it
 * reached the separate SET before).
 *
 * Everything the arguments could get wrong is refused before the token is looked at
 * (negative limits, transaction_timeout before PostgreSQL 17, a search path that does not
 * parse), so a refused call never uses up a single-use token: the token checks come
 * last, as in tenancy.enter, and after them nothing is refused.
 */
Datum
tenancy_enter_pooled(PG_FUNCTION_ARGS)
{
	int			arg;
	const char *search_path = NULL;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("tenancy: enter_pooled needs read_only (true or false)")));
	for (arg = 2; arg <= 5; arg++)
		if (!PG_ARGISNULL(arg) && PG_GETARG_INT32(arg) < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("tenancy: enter_pooled's limits are milliseconds, 0 or more")));
#if PG_VERSION_NUM < 170000
	if (!PG_ARGISNULL(5))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("tenancy: transaction_timeout needs PostgreSQL 17 or newer")));
#endif
	if (!PG_ARGISNULL(6))
	{
		search_path = text_to_cstring(PG_GETARG_TEXT_PP(6));
		/* Checked, not set: RESET ALL comes first. */
		(void) set_config_option("search_path", search_path, PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, false, ERROR, false);
	}
	if (!PG_ARGISNULL(2))
		restart_statement_timeout(PG_GETARG_INT32(2));

	(void) enter_context(fcinfo, PG_GETARG_BOOL(1), true);

	set_local_ms(fcinfo, 2, "statement_timeout");
	set_local_ms(fcinfo, 3, "lock_timeout");
	set_local_ms(fcinfo, 4, "idle_in_transaction_session_timeout");
	set_local_ms(fcinfo, 5, "transaction_timeout");
	set_local("row_security", "on");
	set_local("client_min_messages", "notice");
	if (search_path != NULL)
		set_local("search_path", search_path);
	PG_RETURN_INT32(MyProcPid);
}

/* tenancy.current_tenant_id() RETURNS uuid: the entered tenant, or NULL. */
Datum
tenancy_current_tenant_id(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *result;

	if (!context_active())
		PG_RETURN_NULL();
	result = (pg_uuid_t *) palloc(sizeof(pg_uuid_t));
	*result = ctx_tenant;
	PG_RETURN_UUID_P(result);
}

/*
 * tenancy.audit_event_valid_native(record) RETURNS boolean (extension version 1.2): the
 * rules of tenancy-audit's PL/pgSQL tenancy.audit_event_valid(tenancy.audit_events)
 * (crates/tenancy-audit/sql/audit.sql), for a row of that table, in C. That table's CHECK
 * calls this one where it exists: a PL/pgSQL function is set up again in every transaction
 * (its interpreter state and the plans of its expressions), which made it the largest part
 * of what an audit event costs the server; here a row costs a look-up of its columns and
 * a few byte comparisons.
 *
 * The same rules, with the same SQL meaning (a NULL field passes any rule on it, as the
 * PL/pgSQL function's `IS NOT FALSE` lets it):
 *   - chain fields (chain_pos, prev_hash, hash): none set, or all three with chain_pos >= 1
 *     and both hashes 32 bytes;
 *   - actor_kind one of user, api_key, admin, worker, system; outcome one of success,
 *     failure, denied (byte equality, as text equality under a deterministic collation);
 *   - action matching ^[A-Za-z][A-Za-z0-9_.:/-]*$ (ASCII ranges, by code, as PostgreSQL's
 *     regular expressions read them: any byte of a multibyte character fails) and at most
 *     128 bytes;
 *   - actor_subject and target at most 1024 bytes, actor_key_id, request_id and trace_id
 *     at most 256 (octet_length: the stored size before compression).
 *
 * The argument is a whole row (`record`: the extension cannot name the table's type,
 * which tenancy-audit creates later); its columns are found by name and type once per
 * backend and version of the row type (the type cache's descriptor identifier changes
 * with the table). A row without one of them, or an anonymous record, is an error, never
 * a pass.
 */
#define AUDIT_COLUMNS 11

typedef enum AuditColumn
{
	AC_ACTOR_KIND,
	AC_OUTCOME,
	AC_ACTION,
	AC_ACTOR_SUBJECT,
	AC_TARGET,
	AC_ACTOR_KEY_ID,
	AC_REQUEST_ID,
	AC_TRACE_ID,
	AC_CHAIN_POS,
	AC_PREV_HASH,
	AC_HASH
} AuditColumn;

static const struct
{
	const char *name;
	Oid			type;
}			audit_columns[AUDIT_COLUMNS] = {
	{"actor_kind", TEXTOID},
	{"outcome", TEXTOID},
	{"action", TEXTOID},
	{"actor_subject", TEXTOID},
	{"target", TEXTOID},
	{"actor_key_id", TEXTOID},
	{"request_id", TEXTOID},
	{"trace_id", TEXTOID},
	{"chain_pos", INT8OID},
	{"prev_hash", BYTEAOID},
	{"hash", BYTEAOID},
};

/*
 * The attribute number (from 1) of each column in the last row type seen, for the version
 * of that type whose typcache identifier is audit_desc_id (a changed table, ALTER TABLE,
 * gets a new identifier: the columns are looked up again).
 */
static Oid	audit_rowtype = InvalidOid;
static uint64 audit_desc_id = 0;
static AttrNumber audit_attnums[AUDIT_COLUMNS];

/* Finds each column in `desc` (by name, of its type) or raises an error. */
static void
audit_find_columns(Oid rowtype, uint64 desc_id, TupleDesc desc)
{
	int			c;
	AttrNumber	a;

	audit_rowtype = InvalidOid;
	for (c = 0; c < AUDIT_COLUMNS; c++)
	{
		for (a = 1; a <= desc->natts; a++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, a - 1);

			if (!att->attisdropped && att->atttypid == audit_columns[c].type
				&& strcmp(NameStr(att->attname), audit_columns[c].name) == 0)
				break;
		}
		if (a > desc->natts)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("tenancy: audit_event_valid_native needs a row with a column %s of type %s",
							audit_columns[c].name, format_type_be(audit_columns[c].type))));
		audit_attnums[c] = a;
	}
	audit_rowtype = rowtype;
	audit_desc_id = desc_id;
}

/* octet_length: the size before compression, without the header. */
static int64
audit_octets(Datum d)
{
	return (int64) toast_raw_datum_size(d) - VARHDRSZ;
}

/* Whether text `d` equals one of the NULL-terminated `set`. */
static bool
audit_text_in(Datum d, const char *const *set)
{
	text	   *t = DatumGetTextPP(d);
	const char *p = VARDATA_ANY(t);
	size_t		len = VARSIZE_ANY_EXHDR(t);

	for (; *set != NULL; set++)
		if (strlen(*set) == len && memcmp(*set, p, len) == 0)
			return true;
	return false;
}

static bool
audit_ascii_letter(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* ^[A-Za-z][A-Za-z0-9_.:/-]*$ */
static bool
audit_action_ok(Datum d)
{
	text	   *t = DatumGetTextPP(d);
	const char *p = VARDATA_ANY(t);
	size_t		len = VARSIZE_ANY_EXHDR(t);
	size_t		i;

	if (len == 0 || !audit_ascii_letter(p[0]))
		return false;
	for (i = 1; i < len; i++)
	{
		char		c = p[i];

		if (!(audit_ascii_letter(c) || (c >= '0' && c <= '9') || c == '_' || c == '.'
			  || c == ':' || c == '/' || c == '-'))
			return false;
	}
	return true;
}

/*
 * The rules, on an event's fields (values[c] and nulls[c] for each AuditColumn c): the
 * CHECK's (tenancy_audit_event_valid) and tenancy.audit_append's.
 */
static bool
audit_fields_ok(const Datum *values, const bool *nulls)
{
	static const char *const actor_kinds[] = {"user", "api_key", "admin", "worker", "system", NULL};
	static const char *const outcomes[] = {"success", "failure", "denied", NULL};
	bool		ok = true;
	int			c;

	if (!nulls[AC_CHAIN_POS] || !nulls[AC_PREV_HASH] || !nulls[AC_HASH])
	{
		if (nulls[AC_CHAIN_POS] || nulls[AC_PREV_HASH] || nulls[AC_HASH]
			|| DatumGetInt64(values[AC_CHAIN_POS]) < 1
			|| audit_octets(values[AC_PREV_HASH]) != 32
			|| audit_octets(values[AC_HASH]) != 32)
			return false;
	}
	if (!nulls[AC_ACTOR_KIND] && !audit_text_in(values[AC_ACTOR_KIND], actor_kinds))
		ok = false;
	else if (!nulls[AC_OUTCOME] && !audit_text_in(values[AC_OUTCOME], outcomes))
		ok = false;
	else if (!nulls[AC_ACTION]
			 && (audit_octets(values[AC_ACTION]) > 128 || !audit_action_ok(values[AC_ACTION])))
		ok = false;
	else
		for (c = AC_ACTOR_SUBJECT; c <= AC_TRACE_ID; c++)
			if (!nulls[c] && audit_octets(values[c]) > (c <= AC_TARGET ? 1024 : 256))
				ok = false;
	return ok;
}

Datum
tenancy_audit_event_valid(PG_FUNCTION_ARGS)
{
	HeapTupleHeader row;
	HeapTupleData tuple;
	TypeCacheEntry *type;
	Oid			rowtype;
	Datum		row_values[MaxHeapAttributeNumber];
	bool		row_nulls[MaxHeapAttributeNumber];
	Datum		values[AUDIT_COLUMNS];
	bool		nulls[AUDIT_COLUMNS];
	int			c;

	/* A NULL row: every field is NULL, and no rule refuses a NULL field. */
	if (PG_ARGISNULL(0))
		PG_RETURN_BOOL(true);
	row = PG_GETARG_HEAPTUPLEHEADER(0);
	rowtype = HeapTupleHeaderGetTypeId(row);
	/* An anonymous record (ROW(...)) is not a row of the table. */
	if (rowtype == RECORDOID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("tenancy: audit_event_valid_native needs a row of a table, not an anonymous record")));
	/* No catalog access below: the type cache entry and its descriptor stay valid. */
	type = lookup_type_cache(rowtype, TYPECACHE_TUPDESC);
	if (type->tupDesc == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("tenancy: audit_event_valid_native needs a row, not type %s",
						format_type_be(rowtype))));
	if (rowtype != audit_rowtype || type->tupDesc_identifier != audit_desc_id)
		audit_find_columns(rowtype, type->tupDesc_identifier, type->tupDesc);
	tuple.t_len = HeapTupleHeaderGetDatumLength(row);
	ItemPointerSetInvalid(&tuple.t_self);
	tuple.t_tableOid = InvalidOid;
	tuple.t_data = row;
	/* One pass over the row. */
	heap_deform_tuple(&tuple, type->tupDesc, row_values, row_nulls);
	for (c = 0; c < AUDIT_COLUMNS; c++)
	{
		values[c] = row_values[audit_attnums[c] - 1];
		nulls[c] = row_nulls[audit_attnums[c] - 1];
	}

	PG_RETURN_BOOL(audit_fields_ok(values, nulls));
}

/*
 * tenancy.audit_append(tenant_id uuid, actor_kind text, action text, outcome text,
 *     actor_subject text, actor_key_id text, target text, before jsonb, after jsonb,
 *     request_id text, trace_id text, client_addr inet) RETURNS void (extension version
 * 1.3): what `INSERT INTO tenancy.audit_events (<those columns>) VALUES (…)` does for the
 * runtime role, without the planner and the executor. An INSERT sets up a plan, its row
 * security, its permission checks and its CHECK expression in every execution, most of
 * what an audit event cost the server; here it costs the work of the row itself.
 *
 * The same outcome as that INSERT, checked in the same order, with the same errors:
 *   - INSERT privilege on each column given a value (not SECURITY DEFINER: the caller's
 *     grants; tenancy_app has INSERT on exactly these columns);
 *   - a writable transaction;
 *   - row security: the tenant is the one this backend's context entered in this
 *     transaction (the tenant isolation policy's check, `tenant_id =
 *     tenancy.current_tenant_id()`); no context refuses every tenant. Stricter than the
 *     INSERT for the owner role, whose own policy lets it insert any tenant's events: it
 *     uses the INSERT;
 *   - the column defaults the table has: seq from its identity sequence, xid the
 *     transaction's id (pg_current_xact_id()), occurred_at the time now
 *     (clock_timestamp()); the chain fields and sealed_at stay NULL;
 *   - NOT NULL, then the table's CHECK (tenancy.audit_event_valid_native or the PL/pgSQL
 *     tenancy.audit_event_valid: the same rules, audit_fields_ok);
 *   - heap_insert (WAL, logical decoding, TOAST, serializable conflict checks, statistics
 *     as for any insert), then the row in each index whose predicate it matches.
 *
 * The table must have the shape tenancy-audit installs, else the call is an error (never
 * an insertion that skips something): the columns of an event and no other, no generated
 * column, defaults only on tenant_id, xid and occurred_at, seq an identity always
 * generated, exactly one CHECK constraint, audit_events_valid, calling one of the two
 * functions on the whole row, no trigger that fires on INSERT (the append-only triggers
 * fire on UPDATE, DELETE and TRUNCATE; a foreign key's would fire on INSERT), and only
 * B-tree indexes on plain columns, without a predicate or with `chain_pos IS NULL` or
 * `chain_pos IS NOT NULL` (an appended event has no chain position), none deferrable nor
 * an exclusion constraint. The shape is read once per backend and read again after any
 * change of the table (a relcache invalidation).
 */
typedef enum AppendColumn
{
	/* The arguments, in order. */
	AP_TENANT_ID,
	AP_ACTOR_KIND,
	AP_ACTION,
	AP_OUTCOME,
	AP_ACTOR_SUBJECT,
	AP_ACTOR_KEY_ID,
	AP_TARGET,
	AP_BEFORE,
	AP_AFTER,
	AP_REQUEST_ID,
	AP_TRACE_ID,
	AP_CLIENT_ADDR,
	/* Set here. */
	AP_SEQ,
	AP_XID,
	AP_OCCURRED_AT,
	/* NULL on an appended event. */
	AP_CHAIN_POS,
	AP_PREV_HASH,
	AP_HASH,
	AP_SEALED_AT,
	AP_COLUMNS
} AppendColumn;

#define AP_ARGS (AP_CLIENT_ADDR + 1)
#define AP_MAX_INDEXES 8

static const struct
{
	const char *name;
	Oid			type;
	bool		may_default;
	AuditColumn check;			/* its place in the CHECK's fields, or -1 */
}			append_columns[AP_COLUMNS] = {
	{"tenant_id", UUIDOID, true, -1},
	{"actor_kind", TEXTOID, false, AC_ACTOR_KIND},
	{"action", TEXTOID, false, AC_ACTION},
	{"outcome", TEXTOID, false, AC_OUTCOME},
	{"actor_subject", TEXTOID, false, AC_ACTOR_SUBJECT},
	{"actor_key_id", TEXTOID, false, AC_ACTOR_KEY_ID},
	{"target", TEXTOID, false, AC_TARGET},
	{"before", JSONBOID, false, -1},
	{"after", JSONBOID, false, -1},
	{"request_id", TEXTOID, false, AC_REQUEST_ID},
	{"trace_id", TEXTOID, false, AC_TRACE_ID},
	{"client_addr", INETOID, false, -1},
	{"seq", INT8OID, false, -1},
	{"xid", XID8OID, true, -1},
	{"occurred_at", TIMESTAMPTZOID, true, -1},
	{"chain_pos", INT8OID, false, AC_CHAIN_POS},
	{"prev_hash", BYTEAOID, false, AC_PREV_HASH},
	{"hash", BYTEAOID, false, AC_HASH},
	{"sealed_at", TIMESTAMPTZOID, false, -1},
};

/* The table's shape, as audit_append_shape read it; `valid` until the table changes. */
static struct
{
	bool		valid;
	Oid			relid;
	Oid			seqid;
	AttrNumber	attnums[AP_COLUMNS];
	int			nindexes;
	Oid			indexes[AP_MAX_INDEXES];
	bool		unique[AP_MAX_INDEXES];
	IndexInfo  *infos[AP_MAX_INDEXES];	/* in append_memory */
	/* The arguments (bit c for AppendColumn c) `user` was found to have INSERT on. */
	Oid			user;
	uint32		granted;
}			append_shape;
static MemoryContext append_memory = NULL;
static bool append_callbacks_registered = false;

/*
 * Any change of the table, one of its indexes, its grants (GRANT and REVOKE on the table or
 * a column change its pg_class or pg_attribute rows, which invalidate its relcache entry)
 * forgets the shape and the privileges found; a change of roles or role memberships
 * forgets the privileges. The invalidations arrive when a transaction starts and when a
 * lock is taken, as for the relcache itself, so a REVOKE applies from the next transaction
 * (or the next statement that locks the table first).
 */
static void
append_relcache_callback(Datum arg, Oid relid)
{
	int			i;

	if (relid == InvalidOid || relid == append_shape.relid)
		append_shape.valid = false;
	for (i = 0; i < append_shape.nindexes; i++)
		if (relid == append_shape.indexes[i])
			append_shape.valid = false;
	if (!append_shape.valid)
		append_shape.granted = 0;
}

static void
append_role_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	append_shape.granted = 0;
}

TENANCY_NORETURN_BEFORE static void append_refuse(Relation rel, const char *problem) TENANCY_NORETURN_AFTER;

static void
append_refuse(Relation rel, const char *problem)
{
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("tenancy: audit_append cannot insert into %s: %s",
					RelationGetRelationName(rel), problem),
			 errhint("Use INSERT INTO tenancy.audit_events.")));
}

/* Whether `node` is `chain_pos IS NULL` (1), `chain_pos IS NOT NULL` (0), else -1. */
static int
append_chain_pos_test(Node *node, AttrNumber chain_pos)
{
	NullTest   *t;

	if (!IsA(node, NullTest))
		return -1;
	t = (NullTest *) node;
	if (t->argisrow || !IsA(t->arg, Var) || ((Var *) t->arg)->varattno != chain_pos)
		return -1;
	return t->nulltesttype == IS_NULL ? 1 : 0;
}

/* Reads the shape of `rel` (locked) into append_shape, or refuses the table. */
static void
audit_append_shape(Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	TupleConstr *constr = desc->constr;
	TriggerDesc *trig = rel->trigdesc;
	List	   *indexes;
	ListCell   *lc;
	Node	   *check;
	int			a,
				c;

	append_shape.valid = false;
	append_shape.granted = 0;
	append_shape.relid = RelationGetRelid(rel);
	append_shape.nindexes = 0;
	if (append_memory == NULL)
		append_memory = AllocSetContextCreate(CacheMemoryContext, "tenancy audit_append",
											  ALLOCSET_SMALL_SIZES);
	MemoryContextReset(append_memory);
	if (rel->rd_rel->relkind != RELKIND_RELATION)
		append_refuse(rel, "not a table");
	for (c = 0; c < AP_COLUMNS; c++)
		append_shape.attnums[c] = InvalidAttrNumber;
	for (a = 1; a <= desc->natts; a++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, a - 1);

		if (att->attisdropped)
			continue;
		for (c = 0; c < AP_COLUMNS; c++)
			if (strcmp(NameStr(att->attname), append_columns[c].name) == 0)
				break;
		if (c == AP_COLUMNS || att->atttypid != append_columns[c].type)
			append_refuse(rel, "a column that is not an event's, or of another type");
		if (att->attgenerated != '\0')
			append_refuse(rel, "a generated column");
		if (att->atthasdef && !append_columns[c].may_default)
			append_refuse(rel, "a default where the event's table has none");
		append_shape.attnums[c] = a;
	}
	for (c = 0; c < AP_COLUMNS; c++)
		if (append_shape.attnums[c] == InvalidAttrNumber)
			append_refuse(rel, "a column of an event is missing");
	if (TupleDescAttr(desc, append_shape.attnums[AP_SEQ] - 1)->attidentity != ATTRIBUTE_IDENTITY_ALWAYS)
		append_refuse(rel, "seq is not GENERATED ALWAYS AS IDENTITY");
#if PG_VERSION_NUM >= 170000
	append_shape.seqid = getIdentitySequence(rel, append_shape.attnums[AP_SEQ], false);
#else
	append_shape.seqid = getIdentitySequence(RelationGetRelid(rel), append_shape.attnums[AP_SEQ], false);
#endif

	/* One CHECK: audit_events_valid, tenancy.audit_event_valid[_native](<the row>). */
	if (constr == NULL || constr->num_check != 1
		|| strcmp(constr->check[0].ccname, "audit_events_valid") != 0)
		append_refuse(rel, "its CHECK constraints are not exactly audit_events_valid");
	check = stringToNode(constr->check[0].ccbin);
	{
		FuncExpr   *f = (FuncExpr *) check;
		char	   *fname;
		Node	   *arg;

		if (!IsA(check, FuncExpr) || list_length(f->args) != 1)
			append_refuse(rel, "audit_events_valid is not a call of tenancy.audit_event_valid");
		arg = (Node *) linitial(f->args);
		fname = get_func_name(f->funcid);
		if (!IsA(arg, Var) || ((Var *) arg)->varattno != 0 || fname == NULL
			|| (strcmp(fname, "audit_event_valid_native") != 0 && strcmp(fname, "audit_event_valid") != 0)
			|| get_func_namespace(f->funcid) != RelationGetNamespace(rel))
			append_refuse(rel, "audit_events_valid is not a call of tenancy.audit_event_valid on the row");
	}

	if (trig != NULL
		&& (trig->trig_insert_before_row || trig->trig_insert_after_row
			|| trig->trig_insert_instead_row || trig->trig_insert_before_statement
			|| trig->trig_insert_after_statement || trig->trig_insert_new_table))
		append_refuse(rel, "a trigger fires on INSERT");

	indexes = RelationGetIndexList(rel);
	foreach(lc, indexes)
	{
		Oid			indexoid = lfirst_oid(lc);
		Relation	index = index_open(indexoid, AccessShareLock);
		Form_pg_index form = index->rd_index;
		List	   *pred;
		bool		included = true;
		ListCell   *p;

		if (index->rd_rel->relam != BTREE_AM_OID || RelationGetIndexExpressions(index) != NIL
			|| form->indisexclusion || (form->indisunique && !form->indimmediate))
			append_refuse(rel, "an index other than a B-tree on plain columns checked at once");
		pred = RelationGetIndexPredicate(index);
		foreach(p, pred)
		{
			int			t = append_chain_pos_test((Node *) lfirst(p), append_shape.attnums[AP_CHAIN_POS]);

			if (t < 0)
				append_refuse(rel, "an index predicate other than chain_pos IS [NOT] NULL");
			if (t == 0)
				included = false;
		}
		if (form->indisready && included)
		{
			if (append_shape.nindexes == AP_MAX_INDEXES)
				append_refuse(rel, "too many indexes");
			append_shape.indexes[append_shape.nindexes] = indexoid;
			append_shape.unique[append_shape.nindexes] = form->indisunique;
			{
				MemoryContext old = MemoryContextSwitchTo(append_memory);

				append_shape.infos[append_shape.nindexes] = BuildIndexInfo(index);
				MemoryContextSwitchTo(old);
			}
			append_shape.nindexes++;
		}
		index_close(index, AccessShareLock);
	}
	list_free(indexes);
	append_shape.valid = true;
}

Datum
tenancy_audit_append(PG_FUNCTION_ARGS)
{
	Oid			relid;
	Relation	rel;
	TupleDesc	desc;
	Datum	   *values;
	bool	   *nulls;
	Datum		fields[AUDIT_COLUMNS];
	bool		field_nulls[AUDIT_COLUMNS];
	HeapTuple	tuple;
	Oid			user = GetUserId();
	int			c,
				i;

	if (!append_callbacks_registered)
	{
		CacheRegisterRelcacheCallback(append_relcache_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHOID, append_role_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, append_role_callback, (Datum) 0);
		append_callbacks_registered = true;
	}

	/* The table: tenancy.audit_events, its shape read once per change. */
	relid = append_shape.valid ? append_shape.relid : InvalidOid;
	rel = OidIsValid(relid) ? try_relation_open(relid, RowExclusiveLock) : NULL;
	if (rel == NULL || !append_shape.valid || RelationGetRelid(rel) != append_shape.relid)
	{
		if (rel != NULL)
			relation_close(rel, RowExclusiveLock);
		relid = get_relname_relid("audit_events", get_namespace_oid("tenancy", false));
		if (!OidIsValid(relid))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg("relation \"tenancy.audit_events\" does not exist")));
		rel = relation_open(relid, RowExclusiveLock);
		audit_append_shape(rel);
	}
	desc = RelationGetDescr(rel);

	/*
	 * INSERT privilege on the columns given a value, checked once per user and column until
	 * the table's grants or the roles change (append_relcache_callback).
	 */
	if (append_shape.user != user)
	{
		append_shape.user = user;
		append_shape.granted = 0;
	}
	for (c = 0; c < AP_ARGS; c++)
		if (!PG_ARGISNULL(c) && (append_shape.granted & (1U << c)) == 0)
		{
			if (pg_class_aclcheck(relid, user, ACL_INSERT) == ACLCHECK_OK)
			{
				append_shape.granted = (1U << AP_ARGS) - 1;
				break;
			}
			if (pg_attribute_aclcheck(relid, append_shape.attnums[c], user, ACL_INSERT) != ACLCHECK_OK)
				aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_TABLE, RelationGetRelationName(rel));
			append_shape.granted |= 1U << c;
		}
	PreventCommandIfReadOnly("tenancy.audit_append()");
	PreventCommandIfParallelMode("tenancy.audit_append()");

	/* Row security: the entered tenant's events only. */
	if (PG_ARGISNULL(AP_TENANT_ID) || !context_active()
		|| memcmp(PG_GETARG_UUID_P(AP_TENANT_ID), &ctx_tenant, sizeof(pg_uuid_t)) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("new row violates row-level security policy for table \"%s\"",
						RelationGetRelationName(rel))));

	values = (Datum *) palloc0(desc->natts * sizeof(Datum));
	nulls = (bool *) palloc(desc->natts * sizeof(bool));
	memset(nulls, true, desc->natts * sizeof(bool));
	for (c = 0; c < AP_ARGS; c++)
		if (!PG_ARGISNULL(c))
		{
			values[append_shape.attnums[c] - 1] = PG_GETARG_DATUM(c);
			nulls[append_shape.attnums[c] - 1] = false;
		}
	values[append_shape.attnums[AP_SEQ] - 1] = Int64GetDatum(nextval_internal(append_shape.seqid, false));
	nulls[append_shape.attnums[AP_SEQ] - 1] = false;
	values[append_shape.attnums[AP_XID] - 1] = FullTransactionIdGetDatum(GetTopFullTransactionId());
	nulls[append_shape.attnums[AP_XID] - 1] = false;
	values[append_shape.attnums[AP_OCCURRED_AT] - 1] = TimestampTzGetDatum(GetCurrentTimestamp());
	nulls[append_shape.attnums[AP_OCCURRED_AT] - 1] = false;

	/* NOT NULL, then the CHECK. */
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attnotnull && nulls[i] && !att->attisdropped)
			ereport(ERROR,
					(errcode(ERRCODE_NOT_NULL_VIOLATION),
					 errmsg("null value in column \"%s\" of relation \"%s\" violates not-null constraint",
							NameStr(att->attname), RelationGetRelationName(rel)),
					 errtablecol(rel, i + 1)));
	}
	for (c = 0; c < AP_COLUMNS; c++)
		if ((int) append_columns[c].check >= 0)
		{
			fields[append_columns[c].check] = values[append_shape.attnums[c] - 1];
			field_nulls[append_columns[c].check] = nulls[append_shape.attnums[c] - 1];
		}
	if (!audit_fields_ok(fields, field_nulls))
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("new row for relation \"%s\" violates check constraint \"%s\"",
						RelationGetRelationName(rel), "audit_events_valid"),
				 errtableconstraint(rel, "audit_events_valid")));

	tuple = heap_form_tuple(desc, values, nulls);
	simple_heap_insert(rel, tuple);
	for (i = 0; i < append_shape.nindexes; i++)
	{
		Relation	index = index_open(append_shape.indexes[i], RowExclusiveLock);
		IndexInfo  *info = append_shape.infos[i];
		Datum		keys[INDEX_MAX_KEYS];
		bool		key_nulls[INDEX_MAX_KEYS];
		int			k;

		for (k = 0; k < info->ii_NumIndexAttrs; k++)
		{
			AttrNumber	a = info->ii_IndexAttrNumbers[k];

			keys[k] = values[a - 1];
			key_nulls[k] = nulls[a - 1];
		}
		index_insert(index, keys, key_nulls, &tuple->t_self, rel,
					 append_shape.unique[i] ? UNIQUE_CHECK_YES : UNIQUE_CHECK_NO, false, info);
		index_close(index, NoLock);
	}
	relation_close(rel, NoLock);
	PG_RETURN_VOID();
}
