package dev.quiver.jdbc;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.sql.Connection;
import java.sql.Date;
import java.sql.ParameterMetaData;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Timestamp;
import java.sql.Types;
import java.time.LocalDate;
import java.time.LocalDateTime;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** Plain and prepared statements as a dashboard runs them. */
class StatementTest {
    private static Connection conn;

    @BeforeAll
    static void open() throws SQLException {
        conn = Servers.plain();
    }

    @AfterAll
    static void close() throws SQLException {
        conn.close();
    }

    private static List<Long> ids(ResultSet rs) throws SQLException {
        List<Long> out = new ArrayList<>();
        try (rs) {
            while (rs.next()) {
                out.add(rs.getLong(1));
            }
        }
        return out;
    }

    @Test
    void aPlainQueryReturnsItsRowsAndTypedValues() throws SQLException {
        try (Statement st = conn.createStatement();
             ResultSet rs = st.executeQuery("SELECT i, l, d, s, b, dt, ts FROM typed ORDER BY i")) {
            assertTrue(rs.next());
            assertEquals(1, rs.getInt("i"));
            assertEquals(10_000_000_000L, rs.getLong("l"));
            assertEquals(1.5, rs.getDouble("d"));
            assertEquals("one", rs.getString("s"));
            assertTrue(rs.getBoolean("b"));
            assertEquals(LocalDate.of(2024, 1, 2), rs.getDate("dt").toLocalDate());
            assertEquals(LocalDateTime.of(2024, 1, 2, 3, 4, 5),
                rs.getTimestamp("ts").toLocalDateTime());
            assertTrue(rs.next());
            assertEquals(2, rs.getInt("i"));
            rs.getLong("l");
            assertTrue(rs.wasNull());
            assertNull(rs.getString("s"));
            assertNull(rs.getObject("b"));
            assertNull(rs.getDate("dt"));
            assertNull(rs.getTimestamp("ts"));
            assertFalse(rs.next());
        }
    }

    @Test
    void executeReportsAResultSetForQueries() throws SQLException {
        try (Statement st = conn.createStatement()) {
            assertTrue(st.execute("SELECT id FROM docs ORDER BY id"));
            assertEquals(List.of(1L, 2L, 3L), ids(st.getResultSet()));
        }
    }

    @Test
    void preparedQueryBindsALongAndAString() throws SQLException {
        try (PreparedStatement ps = conn.prepareStatement(
                "SELECT id FROM docs WHERE id >= ? AND title <> ? ORDER BY id")) {
            ps.setLong(1, 2L);
            ps.setString(2, "Go");
            assertEquals(List.of(2L), ids(ps.executeQuery()));
            // The same statement again with other values, as a dashboard filter change does.
            ps.setLong(1, 1L);
            ps.setString(2, "Python");
            assertEquals(List.of(1L, 3L), ids(ps.executeQuery()));
        }
    }

    @Test
    void preparedQueryBindsEveryCommonType() throws SQLException {
        try (PreparedStatement ps = conn.prepareStatement(
                "SELECT i FROM typed WHERE i = ? AND l = ? AND d = ? AND s = ? AND b = ? "
                    + "AND dt = ? AND ts = ?")) {
            ps.setInt(1, 1);
            ps.setLong(2, 10_000_000_000L);
            ps.setDouble(3, 1.5);
            ps.setString(4, "one");
            ps.setBoolean(5, true);
            ps.setDate(6, Date.valueOf(LocalDate.of(2024, 1, 2)));
            ps.setTimestamp(7, Timestamp.valueOf(LocalDateTime.of(2024, 1, 2, 3, 4, 5)));
            assertEquals(List.of(1L), ids(ps.executeQuery()));
        }
    }

    @Test
    void preparedInsertOfEveryCommonTypeAndNullReadsBack() throws SQLException {
        try (Statement st = conn.createStatement()) {
            st.execute("CREATE TABLE jdbc_params (i INT, l BIGINT, d DOUBLE, s VARCHAR, "
                + "b BOOLEAN, dt DATE, ts TIMESTAMP)");
        }
        try {
            try (PreparedStatement ps = conn.prepareStatement(
                    "INSERT INTO jdbc_params VALUES (?, ?, ?, ?, ?, ?, ?)")) {
                ps.setInt(1, 7);
                ps.setLong(2, -9_000_000_000L);
                ps.setDouble(3, -0.25);
                ps.setString(4, "it's \"quoted\"");
                ps.setBoolean(5, false);
                ps.setDate(6, Date.valueOf(LocalDate.of(1999, 12, 31)));
                ps.setTimestamp(7, Timestamp.valueOf(LocalDateTime.of(2000, 2, 29, 23, 59, 58)));
                assertEquals(1, ps.executeUpdate());
                ps.setInt(1, 8);
                for (int p = 2; p <= 7; p++) {
                    ps.setNull(p, Types.NULL);
                }
                assertEquals(1, ps.executeUpdate());
            }
            try (Statement st = conn.createStatement();
                 ResultSet rs = st.executeQuery(
                     "SELECT i, l, d, s, b, dt, ts FROM jdbc_params ORDER BY i")) {
                assertTrue(rs.next());
                assertEquals(7, rs.getInt(1));
                assertEquals(-9_000_000_000L, rs.getLong(2));
                assertEquals(-0.25, rs.getDouble(3));
                assertEquals("it's \"quoted\"", rs.getString(4));
                assertFalse(rs.getBoolean(5));
                assertFalse(rs.wasNull());
                assertEquals(LocalDate.of(1999, 12, 31), rs.getDate(6).toLocalDate());
                assertEquals(LocalDateTime.of(2000, 2, 29, 23, 59, 58),
                    rs.getTimestamp(7).toLocalDateTime());
                assertTrue(rs.next());
                assertEquals(8, rs.getInt(1));
                for (int c = 2; c <= 7; c++) {
                    assertNull(rs.getObject(c), "column " + c);
                }
                assertFalse(rs.next());
            }
        } finally {
            try (Statement st = conn.createStatement()) {
                st.execute("DROP TABLE jdbc_params");
            }
        }
    }

    @Test
    void aMillionRowsReadThroughInOrder() throws SQLException {
        long expectedRows = Long.parseLong(Servers.prop("quiver.bigRows"));
        long rows = 0;
        long idSum = 0;
        double vSum = 0;
        long started = System.nanoTime();
        try (Statement st = conn.createStatement();
             ResultSet rs = st.executeQuery("SELECT id, v FROM big")) {
            while (rs.next()) {
                idSum += rs.getLong(1);
                vSum += rs.getDouble(2);
                rows++;
            }
        }
        double seconds = (System.nanoTime() - started) / 1e9;
        System.out.printf("read %d rows through JDBC in %.2fs%n", rows, seconds);
        assertEquals(expectedRows, rows);
        assertEquals(expectedRows * (expectedRows - 1) / 2, idSum);
        assertEquals(idSum * 0.5, vSum, 1e-3);
    }

    @Test
    void aGeneratedSeriesStreamsFromTheServer() throws SQLException {
        try (Statement st = conn.createStatement();
             ResultSet rs = st.executeQuery("SELECT count(*) AS n, sum(value) AS s "
                 + "FROM generate_series(1, 1000000)")) {
            assertTrue(rs.next());
            assertEquals(1_000_000L, rs.getLong("n"));
            assertEquals(500_000_500_000L, rs.getLong("s"));
        }
    }

    @Test
    void bm25SearchTakesABoundQueryText() throws SQLException {
        try (PreparedStatement ps = conn.prepareStatement(
                "SELECT id, title, score FROM bm25_search('docs', 'body', ?, 10) ORDER BY id")) {
            ps.setString(1, "async python");
            try (ResultSet rs = ps.executeQuery()) {
                List<Long> found = new ArrayList<>();
                while (rs.next()) {
                    found.add(rs.getLong("id"));
                    assertTrue(rs.getDouble("score") > 0, "score of " + rs.getString("title"));
                }
                assertEquals(List.of(1L, 2L), found);
            }
        }
    }

    @Test
    void parameterMetadataGivesTheTypesOfTheColumnsCompared() throws SQLException {
        try (PreparedStatement ps = conn.prepareStatement(
                "SELECT i FROM typed WHERE i = ? AND l = ? AND d = ? AND s = ? AND b = ? "
                    + "AND dt = ? AND ts = ? AND ? IS NULL LIMIT ?")) {
            ParameterMetaData md = ps.getParameterMetaData();
            int[] expected = {Types.INTEGER, Types.BIGINT, Types.DOUBLE, Types.VARCHAR,
                Types.BOOLEAN, Types.DATE, Types.TIMESTAMP, Types.VARCHAR, Types.BIGINT};
            assertEquals(expected.length, md.getParameterCount());
            for (int p = 1; p <= expected.length; p++) {
                assertEquals(expected[p - 1], md.getParameterType(p), "parameter " + p);
            }
        }
    }

    @Test
    void aParameterizedSearchDescribesItsColumnsBeforeRunning() throws SQLException {
        try (PreparedStatement ps = conn.prepareStatement(
                "SELECT id, title, score FROM bm25_search('docs', 'body', ?, ?)")) {
            ResultSetMetaData md = ps.getMetaData();
            assertEquals(3, md.getColumnCount());
            assertEquals(Types.BIGINT, md.getColumnType(1));
            assertEquals(Types.VARCHAR, md.getColumnType(2));
            assertEquals(Types.FLOAT, md.getColumnType(3));
            ps.setString(1, "goroutines");
            ps.setInt(2, 5);
            assertEquals(List.of(3L), ids(ps.executeQuery()));
        }
    }

    @Test
    void vectorSearchTakesABoundVectorTextAndK() throws SQLException {
        try (PreparedStatement ps = conn.prepareStatement(
                "SELECT id FROM vector_search('docs', 'embedding', ?, ?)")) {
            ps.setString(1, "[0.1, 0.9, 0.0]");
            ps.setLong(2, 1L);
            assertEquals(List.of(2L), ids(ps.executeQuery()));
            ps.setString(1, "[0.0, 0.1, 0.9]");
            assertEquals(List.of(3L), ids(ps.executeQuery()));
        }
    }

    @Test
    void inListAndLimitTakeParameters() throws SQLException {
        try (PreparedStatement ps = conn.prepareStatement(
                "SELECT id FROM docs WHERE title IN (?, ?) ORDER BY id LIMIT ?")) {
            ps.setString(1, "Go");
            ps.setString(2, "Python");
            ps.setInt(3, 1);
            assertEquals(List.of(2L), ids(ps.executeQuery()));
            ps.setInt(3, 5);
            assertEquals(List.of(2L, 3L), ids(ps.executeQuery()));
        }
    }

    @Test
    void preparedUpdateAndDeleteTakeParameters() throws SQLException {
        try (Statement st = conn.createStatement()) {
            st.executeUpdate("CREATE TABLE jdbc_param_dml (id BIGINT, name VARCHAR, at DATE)");
            st.executeUpdate("INSERT INTO jdbc_param_dml VALUES (1, 'a', DATE '2024-01-01'), "
                + "(2, 'b', DATE '2024-02-01'), (3, 'c', DATE '2024-03-01')");
        }
        try {
            try (PreparedStatement ps = conn.prepareStatement(
                    "UPDATE jdbc_param_dml SET name = ? WHERE at BETWEEN ? AND ?")) {
                ps.setString(1, "early");
                ps.setDate(2, Date.valueOf(LocalDate.of(2024, 1, 1)));
                ps.setDate(3, Date.valueOf(LocalDate.of(2024, 2, 1)));
                assertEquals(2, ps.executeUpdate());
            }
            try (PreparedStatement ps = conn.prepareStatement(
                    "DELETE FROM jdbc_param_dml WHERE id = ?")) {
                ps.setLong(1, 3L);
                assertEquals(1, ps.executeUpdate());
            }
            try (Statement st = conn.createStatement();
                 ResultSet rs = st.executeQuery(
                     "SELECT id, name FROM jdbc_param_dml ORDER BY id")) {
                assertTrue(rs.next());
                assertEquals("early", rs.getString(2));
                assertTrue(rs.next());
                assertEquals("early", rs.getString(2));
                assertFalse(rs.next());
            }
        } finally {
            try (Statement st = conn.createStatement()) {
                st.executeUpdate("DROP TABLE jdbc_param_dml");
            }
        }
    }

    @Test
    void aPreparedStatementWithoutParametersRunsAgain() throws SQLException {
        try (PreparedStatement ps = conn.prepareStatement(
                "SELECT id FROM bm25_search('docs', 'body', 'async python', 10) ORDER BY id")) {
            assertEquals(List.of(1L, 2L), ids(ps.executeQuery()));
            assertEquals(List.of(1L, 2L), ids(ps.executeQuery()));
        }
    }

    @Test
    void aPreparedInsertWithoutParametersCountsItsRows() throws SQLException {
        try (Statement st = conn.createStatement()) {
            st.executeUpdate("CREATE TABLE jdbc_prepared_dml (id BIGINT)");
        }
        try {
            try (PreparedStatement ps = conn.prepareStatement(
                    "INSERT INTO jdbc_prepared_dml VALUES (1), (2)")) {
                assertEquals(2, ps.executeUpdate());
            }
            try (Statement st = conn.createStatement()) {
                assertEquals(List.of(1L, 2L), ids(st.executeQuery(
                    "SELECT id FROM jdbc_prepared_dml ORDER BY id")));
            }
        } finally {
            try (Statement st = conn.createStatement()) {
                st.executeUpdate("DROP TABLE jdbc_prepared_dml");
            }
        }
    }

    @Test
    void aNullOnlyParameterBinds() throws SQLException {
        // A parameter nothing gives a type to is declared VARCHAR; NULL binds too.
        try (PreparedStatement ps = conn.prepareStatement(
                "SELECT id FROM docs WHERE ? IS NULL ORDER BY id")) {
            ps.setNull(1, Types.VARCHAR);
            assertEquals(List.of(1L, 2L, 3L), ids(ps.executeQuery()));
        }
    }

    @Test
    void bm25InWhereFiltersRows() throws SQLException {
        try (Statement st = conn.createStatement()) {
            assertEquals(List.of(1L), ids(st.executeQuery(
                "SELECT id, bm25(body, 'tokio') AS s FROM docs WHERE bm25(body, 'tokio') > 0 "
                    + "ORDER BY s DESC")));
        }
    }

    @Test
    void vectorSearchReturnsTheNearestRow() throws SQLException {
        try (Statement st = conn.createStatement()) {
            assertEquals(List.of(2L), ids(st.executeQuery(
                "SELECT id FROM vector_search('docs', 'embedding', '[0.1, 0.9, 0.0]', 1)")));
        }
    }

    @Test
    void theHiddenRowIdIsSelectableByName() throws SQLException {
        try (Statement st = conn.createStatement();
             ResultSet rs = st.executeQuery("SELECT _id, title FROM docs ORDER BY _id")) {
            assertEquals(Types.BIGINT, rs.getMetaData().getColumnType(1));
            List<Long> rowIds = new ArrayList<>();
            while (rs.next()) {
                rowIds.add(rs.getLong(1));
            }
            assertEquals(3, rowIds.size());
            assertEquals(3, rowIds.stream().distinct().count());
        }
    }

    @Test
    void aVectorColumnReadsAsAnArray() throws SQLException {
        try (Statement st = conn.createStatement();
             ResultSet rs = st.executeQuery("SELECT embedding FROM docs WHERE id = 3")) {
            assertEquals(Types.ARRAY, rs.getMetaData().getColumnType(1));
            assertTrue(rs.next());
            Object[] values = (Object[]) rs.getArray(1).getArray();
            assertEquals(3, values.length);
            assertEquals(1.0f, ((Number) values[2]).floatValue());
        }
    }

    @Test
    void customSqlWrappedInASubqueryWorks() throws SQLException {
        // Tableau runs custom SQL as SELECT ... FROM (<custom sql>) t.
        try (Statement st = conn.createStatement()) {
            assertEquals(List.of(3L), ids(st.executeQuery(
                "SELECT t.id FROM (SELECT id, title, score FROM "
                    + "bm25_search('docs', 'body', 'goroutines', 5)) t")));
        }
    }

    @Test
    void ddlAndDmlRoundTrip() throws SQLException {
        try (Statement st = conn.createStatement()) {
            st.executeUpdate("CREATE TABLE jdbc_dml (id BIGINT, name VARCHAR)");
            try {
                assertEquals(3, st.executeUpdate(
                    "INSERT INTO jdbc_dml VALUES (1, 'a'), (2, 'b'), (3, 'c')"));
                assertEquals(1, st.executeUpdate("UPDATE jdbc_dml SET name = 'B' WHERE id = 2"));
                assertEquals(1, st.executeUpdate("DELETE FROM jdbc_dml WHERE id = 3"));
                try (ResultSet rs = st.executeQuery("SELECT id, name FROM jdbc_dml ORDER BY id")) {
                    assertTrue(rs.next());
                    assertEquals("a", rs.getString(2));
                    assertTrue(rs.next());
                    assertEquals("B", rs.getString(2));
                    assertFalse(rs.next());
                }
                try (ResultSet rs = conn.getMetaData().getTables(null, null, "jdbc_dml", null)) {
                    assertTrue(rs.next(), "a new table is listed at once");
                }
            } finally {
                st.executeUpdate("DROP TABLE jdbc_dml");
            }
            try (ResultSet rs = conn.getMetaData().getTables(null, null, "jdbc_dml", null)) {
                assertFalse(rs.next(), "a dropped table is no longer listed");
            }
        }
    }
}
