// tests/integration/jdbc/ProxyCheck.java — a small JDBC client for tests/integration/test_jdbc.py.
// Owns: exercising pgjdbc the way applications do (a PreparedStatement executed more than
// prepareThreshold times, so the driver switches to a named server-side statement; a batch
// insert; a transaction with a rollback; ResultSet metadata; many column types) and printing
// every result, so that the test can compare the output through the proxy with the output of
// a direct connection. Arguments: JDBC URL, user, password. Exit status 0 on success.

import java.math.BigDecimal;
import java.sql.Array;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Savepoint;
import java.sql.Statement;
import java.sql.Timestamp;
import java.util.Arrays;
import java.util.Properties;

public final class ProxyCheck {
    private ProxyCheck() {
    }

    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.setProperty("user", args[1]);
        props.setProperty("password", args[2]);
        props.setProperty("ApplicationName", "dbguard-jdbc-check");
        try (Connection conn = DriverManager.getConnection(args[0], props)) {
            repeatedPreparedStatement(conn);
            batchInsert(conn);
            transaction(conn);
            metadata(conn);
            types(conn);
            serverError(conn);
        }
        System.out.println("done");
    }

    private static void repeatedPreparedStatement(Connection conn) throws SQLException {
        System.out.println("== prepared statement");
        String sql = "SELECT c.id, c.full_name, count(o.id) AS orders, sum(o.total) AS spent "
            + "FROM customers c LEFT JOIN orders o ON o.customer_id = c.id "
            + "WHERE c.id = ? AND c.full_name <> ? GROUP BY c.id, c.full_name /* jdbc-check */";
        try (PreparedStatement ps = conn.prepareStatement(sql)) {
            for (int i = 1; i <= 12; i++) {
                ps.setInt(1, i * 3);
                ps.setString(2, "nobody 'quoted' ü");
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) {
                        System.out.println(i + ": " + rs.getInt(1) + " | " + rs.getString(2)
                            + " | " + rs.getLong(3) + " | " + rs.getBigDecimal(4));
                    }
                }
            }
            // After prepareThreshold (5) executions the driver uses a named statement (S_n).
            try (Statement st = conn.createStatement();
                 ResultSet rs = st.executeQuery("SELECT count(*) FROM pg_prepared_statements "
                     + "WHERE name LIKE 'S\\_%' AND statement LIKE '%jdbc-check%'")) {
                rs.next();
                System.out.println("named server-side statements: " + rs.getInt(1));
            }
        }
    }

    private static void batchInsert(Connection conn) throws SQLException {
        System.out.println("== batch");
        try (Statement st = conn.createStatement()) {
            st.execute("CREATE TEMP TABLE jdbc_batch (id int PRIMARY KEY, name text, "
                + "amount numeric(10,2), at timestamp)");
        }
        try (PreparedStatement ps = conn.prepareStatement(
                "INSERT INTO jdbc_batch (id, name, amount, at) VALUES (?, ?, ?, ?)")) {
            long start = Timestamp.valueOf("2024-01-01 00:00:00").getTime();
            for (int i = 1; i <= 250; i++) {
                ps.setInt(1, i);
                ps.setString(2, i % 10 == 0 ? null : "name " + i + " 'q' \"dq\" \\ 🐘");
                ps.setBigDecimal(3, new BigDecimal(i).divide(new BigDecimal(4)));
                ps.setTimestamp(4, new Timestamp(start + i * 1000L));
                ps.addBatch();
            }
            int[] counts = ps.executeBatch();
            System.out.println("batch statements: " + counts.length + ", rows: "
                + Arrays.stream(counts).sum());
        }
        try (Statement st = conn.createStatement();
             ResultSet rs = st.executeQuery("SELECT count(*), count(name), sum(amount), "
                 + "min(at), max(at) FROM jdbc_batch")) {
            rs.next();
            System.out.println(rs.getLong(1) + " | " + rs.getLong(2) + " | " + rs.getBigDecimal(3)
                + " | " + rs.getTimestamp(4) + " | " + rs.getTimestamp(5));
        }
    }

    private static void transaction(Connection conn) throws SQLException {
        System.out.println("== transaction");
        try (Statement st = conn.createStatement()) {
            st.execute("CREATE TEMP TABLE jdbc_tx (id int PRIMARY KEY)");
        }
        conn.setAutoCommit(false);
        try (PreparedStatement ps = conn.prepareStatement("INSERT INTO jdbc_tx VALUES (?)")) {
            ps.setInt(1, 1);
            ps.executeUpdate();
            conn.rollback();
            ps.setInt(1, 2);
            ps.executeUpdate();
            Savepoint sp = conn.setSavepoint("sp");
            ps.setInt(1, 3);
            ps.executeUpdate();
            try {
                ps.setInt(1, 2);
                ps.executeUpdate();
            } catch (SQLException e) {
                System.out.println("duplicate: " + e.getSQLState());
            }
            conn.rollback(sp);
            ps.setInt(1, 4);
            ps.executeUpdate();
            conn.commit();
        } finally {
            conn.setAutoCommit(true);
        }
        try (Statement st = conn.createStatement();
             ResultSet rs = st.executeQuery("SELECT string_agg(id::text, ',' ORDER BY id) "
                 + "FROM jdbc_tx")) {
            rs.next();
            System.out.println("committed: " + rs.getString(1));
        }
    }

    private static void metadata(Connection conn) throws SQLException {
        System.out.println("== metadata");
        try (PreparedStatement ps = conn.prepareStatement(
                "SELECT c.id, c.email, c.birth_date, o.total, o.status, o.created_at, "
                + "p.card_number AS card FROM customers c JOIN orders o ON o.customer_id = c.id "
                + "LEFT JOIN payments p ON p.order_id = o.id WHERE o.id <= ? ORDER BY o.id, p.id")) {
            ps.setInt(1, 5);
            try (ResultSet rs = ps.executeQuery()) {
                ResultSetMetaData md = rs.getMetaData();
                for (int i = 1; i <= md.getColumnCount(); i++) {
                    System.out.println(md.getColumnLabel(i) + " | " + md.getColumnName(i) + " | "
                        + md.getColumnTypeName(i) + " | " + md.getColumnType(i) + " | "
                        + md.getPrecision(i) + " | " + md.getScale(i) + " | "
                        + md.isNullable(i) + " | " + md.getTableName(i) + " | "
                        + md.isAutoIncrement(i) + " | " + md.getColumnClassName(i));
                }
                while (rs.next()) {
                    StringBuilder row = new StringBuilder();
                    for (int i = 1; i <= md.getColumnCount(); i++) {
                        row.append(i == 1 ? "" : " | ").append(rs.getString(i));
                    }
                    System.out.println(row);
                }
            }
        }
    }

    private static void types(Connection conn) throws SQLException {
        System.out.println("== types");
        try (PreparedStatement ps = conn.prepareStatement(
                "SELECT ?::uuid, ?::numeric * 2, ?::bytea, ?::int[], ARRAY['a', NULL, 'c''d'], "
                + "'{\"k\": [1, 2]}'::jsonb, interval '1 day 02:03:04.5', "
                + "timestamptz '2020-02-29 12:34:56.789+00', true, 1.5::float8, NULL::text")) {
            for (int round = 0; round < 7; round++) {
                ps.setString(1, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
                ps.setBigDecimal(2, new BigDecimal("12345678901234567890.000000001"));
                ps.setBytes(3, new byte[] {0, 1, (byte) 0xff, 39, 92});
                ps.setArray(4, conn.createArrayOf("int4", new Integer[] {1, null, round}));
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    StringBuilder row = new StringBuilder("round " + round + ":");
                    for (int i = 1; i <= 11; i++) {
                        Object value = rs.getObject(i);
                        if (value instanceof byte[]) {
                            value = Arrays.toString((byte[]) value);
                        } else if (value instanceof Array) {
                            value = Arrays.deepToString((Object[]) ((Array) value).getArray());
                        }
                        row.append(" | ").append(value);
                    }
                    System.out.println(row);
                }
            }
        }
    }

    private static void serverError(Connection conn) throws SQLException {
        System.out.println("== error");
        try (Statement st = conn.createStatement()) {
            st.executeQuery("SELECT 1 / 0");
        } catch (SQLException e) {
            System.out.println(e.getSQLState() + ": " + e.getMessage());
        }
        try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SELECT 42")) {
            rs.next();
            System.out.println("after error: " + rs.getInt(1));
        }
    }
}
