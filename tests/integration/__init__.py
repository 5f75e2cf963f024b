# tests.integration — tests against real throwaway PostgreSQL/MariaDB servers and real clients.
