package dev.quiver.jdbc;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.sql.Connection;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;
import org.junit.jupiter.api.Test;

/** A server started with --user and --token-file: each way a tool passes credentials. */
class AuthTest {
    private static final String PLAIN = "useEncryption=false";

    private static long countDocs(Connection conn) throws SQLException {
        try (conn; Statement st = conn.createStatement();
             ResultSet rs = st.executeQuery("SELECT count(*) FROM docs")) {
            assertTrue(rs.next());
            return rs.getLong(1);
        }
    }

    private static void refused(String query) {
        SQLException e = assertThrows(SQLException.class,
            () -> countDocs(Servers.connect(Servers.url("quiver.auth", query))), query);
        StringBuilder text = new StringBuilder();
        for (Throwable c = e; c != null; c = c.getCause()) {
            text.append(c).append(" | ");
        }
        assertTrue(text.toString().toUpperCase().contains("UNAUTHENTICATED"), text.toString());
    }

    @Test
    void userAndPasswordInTheUrl() throws SQLException {
        String url = Servers.url("quiver.auth", PLAIN + "&user=" + Servers.prop("quiver.user")
            + "&password=" + Servers.prop("quiver.password"));
        assertEquals(3L, countDocs(Servers.connect(url)));
    }

    @Test
    void userAndPasswordAsConnectionProperties() throws SQLException {
        // DBeaver's and Tableau's user/password fields arrive as properties.
        Properties props = new Properties();
        props.setProperty("user", Servers.prop("quiver.user"));
        props.setProperty("password", Servers.prop("quiver.password"));
        assertEquals(3L, countDocs(Servers.connect(Servers.url("quiver.auth", PLAIN), props)));
    }

    @Test
    void aStaticTokenInTheUrl() throws SQLException {
        String url = Servers.url("quiver.auth", PLAIN + "&token=" + Servers.prop("quiver.token"));
        assertEquals(3L, countDocs(Servers.connect(url)));
    }

    @Test
    void metadataNeedsCredentialsToo() throws SQLException {
        String url = Servers.url("quiver.auth", PLAIN + "&token=" + Servers.prop("quiver.token"));
        try (Connection conn = Servers.connect(url);
             ResultSet rs = conn.getMetaData().getTables(null, null, "docs", null)) {
            assertTrue(rs.next());
        }
    }

    @Test
    void aWrongPasswordIsRefused() {
        refused(PLAIN + "&user=" + Servers.prop("quiver.user") + "&password=wrong");
    }

    @Test
    void anUnknownUserIsRefused() {
        refused(PLAIN + "&user=mallory&password=" + Servers.prop("quiver.password"));
    }

    @Test
    void aWrongTokenIsRefused() {
        refused(PLAIN + "&token=not-a-token-of-this-server");
    }

    @Test
    void noCredentialsAreRefused() {
        refused(PLAIN);
    }
}
