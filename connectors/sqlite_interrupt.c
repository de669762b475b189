/* A SQLite extension that lets meshgate interrupt a query the ADBC SQLite driver runs.
 *
 * The driver (1.13) links SQLite statically and answers cancel with NOT_IMPLEMENTED, so a
 * query a client gave up on kept a core busy until it ended. Loaded into each connection
 * through the driver's adbc.sqlite.load_extension options, it tells the gateway the
 * connection's handle (SELECT meshgate_connection()), and meshgate_interrupt(handle) calls
 * the driver's own sqlite3_interrupt on it, which is safe from any thread while the
 * connection is open (connectors/sqlite_interrupt.py guarantees it is).
 */
#include <sqlite3ext.h>
#include <stdint.h>
SQLITE_EXTENSION_INIT1

static void connection(sqlite3_context *context, int argc, sqlite3_value **argv) {
  (void)argc;
  (void)argv;
  sqlite3_result_int64(context, (sqlite3_int64)(intptr_t)sqlite3_context_db_handle(context));
}

void meshgate_interrupt(sqlite3_int64 handle) { sqlite3_interrupt((sqlite3 *)(intptr_t)handle); }

int meshgate_interrupt_init(sqlite3 *db, char **error, const sqlite3_api_routines *api) {
  (void)error;
  SQLITE_EXTENSION_INIT2(api);
  return sqlite3_create_function(db, "meshgate_connection", 0, SQLITE_UTF8, 0, connection, 0, 0);
}
