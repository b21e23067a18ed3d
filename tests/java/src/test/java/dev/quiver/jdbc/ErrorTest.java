package dev.quiver.jdbc;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** Server errors reach the tool as SQLException carrying the server's own message. */
class ErrorTest {
    private static Connection conn;

    @BeforeAll
    static void open() throws SQLException {
        conn = Servers.plain();
    }

    @AfterAll
    static void close() throws SQLException {
        conn.close();
    }

    private static String fullMessage(Throwable t) {
        StringBuilder out = new StringBuilder();
        for (Throwable c = t; c != null; c = c.getCause()) {
            out.append(c.getMessage()).append(" | ");
        }
        return out.toString();
    }

    @Test
    void badSqlIsAnSqlExceptionWithTheParserMessage() {
        SQLException e = assertThrows(SQLException.class, () -> {
            try (Statement st = conn.createStatement()) {
                st.executeQuery("SELEC 1");
            }
        });
        assertTrue(fullMessage(e).contains("SELEC"), fullMessage(e));
    }

    @Test
    void anUnknownTableIsNamedInTheMessage() {
        SQLException e = assertThrows(SQLException.class, () -> {
            try (Statement st = conn.createStatement()) {
                st.executeQuery("SELECT * FROM no_such_table");
            }
        });
        assertTrue(fullMessage(e).contains("unknown table 'no_such_table'"), fullMessage(e));
    }

    @Test
    void preparingAQueryOnAnUnknownTableFailsAtPrepare() {
        SQLException e = assertThrows(SQLException.class,
            () -> conn.prepareStatement("SELECT * FROM no_such_table").close());
        assertTrue(fullMessage(e).contains("unknown table 'no_such_table'"), fullMessage(e));
    }

    @Test
    void preparingAParameterizedStatementOnAnUnknownTableFailsAtPrepare() {
        for (String sql : List.of("SELECT * FROM no_such_table WHERE id = ?",
                "DELETE FROM no_such_table WHERE id = ?")) {
            SQLException e = assertThrows(SQLException.class,
                () -> conn.prepareStatement(sql).close());
            assertTrue(fullMessage(e).contains("unknown table 'no_such_table'"), fullMessage(e));
        }
    }

    @Test
    void preparingUnreadableSqlWithAParameterFailsAtPrepare() {
        SQLException e = assertThrows(SQLException.class,
            () -> conn.prepareStatement("SELECT id FROM docs WHERE id = ? AND").close());
        assertTrue(fullMessage(e).contains("cannot read the statement"), fullMessage(e));
    }

    @Test
    void anUnknownColumnIsNamedInTheMessage() {
        SQLException e = assertThrows(SQLException.class, () -> {
            try (Statement st = conn.createStatement()) {
                st.executeQuery("SELECT nope FROM docs");
            }
        });
        assertTrue(fullMessage(e).contains("nope"), fullMessage(e));
    }

    @Test
    void aFailedStatementDoesNotChangeTheTable() throws SQLException {
        try (Statement st = conn.createStatement()) {
            assertThrows(SQLException.class,
                () -> st.executeUpdate("INSERT INTO docs (id, no_such_column) VALUES (9, 'x')"));
            try (ResultSet rs = st.executeQuery("SELECT count(*) FROM docs")) {
                assertTrue(rs.next());
                assertEquals(3L, rs.getLong(1));
            }
        }
    }

    @Test
    void theConnectionStillWorksAfterAnError() throws SQLException {
        assertThrows(SQLException.class, () -> {
            try (Statement st = conn.createStatement()) {
                st.executeQuery("SELECT nope FROM docs");
            }
        });
        try (PreparedStatement ps = conn.prepareStatement("SELECT count(*) FROM docs");
             ResultSet rs = ps.executeQuery()) {
            assertTrue(rs.next());
            assertEquals(3L, rs.getLong(1));
        }
    }
}
