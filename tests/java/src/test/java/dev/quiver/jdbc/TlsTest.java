package dev.quiver.jdbc;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.sql.Connection;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import org.junit.jupiter.api.Test;

/** A server with --tls-cert/--tls-key (self-signed) and a user: the ways a tool trusts it. */
class TlsTest {
    private static String credentials() {
        return "user=" + Servers.prop("quiver.user") + "&password=" + Servers.prop("quiver.password");
    }

    private static long countDocs(String query) throws SQLException {
        try (Connection conn = Servers.connect(Servers.url("quiver.tls", query));
             Statement st = conn.createStatement();
             ResultSet rs = st.executeQuery("SELECT count(*) FROM docs")) {
            assertTrue(rs.next());
            return rs.getLong(1);
        }
    }

    @Test
    void aJavaTrustStoreHoldingTheCertificate() throws SQLException {
        assertEquals(3L, countDocs("useEncryption=true&useSystemTrustStore=false"
            + "&trustStore=" + Servers.prop("quiver.trustStore")
            + "&trustStorePassword=" + Servers.prop("quiver.trustStorePassword")
            + "&" + credentials()));
    }

    @Test
    void aTrustStoreIsReadOnlyWithTheSystemTrustStoreOff() {
        // useSystemTrustStore defaults to true and then wins over trustStore.
        assertThrows(SQLException.class, () -> countDocs(
            "trustStore=" + Servers.prop("quiver.trustStore")
                + "&trustStorePassword=" + Servers.prop("quiver.trustStorePassword")
                + "&" + credentials()));
    }

    @Test
    void thePemCertificateAsRootCertificate() throws SQLException {
        // tlsRootCerts wins over the system trust store: no other option is needed.
        assertEquals(3L, countDocs("tlsRootCerts=" + Servers.prop("quiver.tlsCert") + "&"
            + credentials()));
    }

    @Test
    void certificateVerificationTurnedOff() throws SQLException {
        assertEquals(3L, countDocs("disableCertificateVerification=true&" + credentials()));
    }

    @Test
    void aSelfSignedCertificateIsNotTrustedByDefault() {
        assertThrows(SQLException.class, () -> countDocs(credentials()));
    }

    @Test
    void plainTcpToATlsServerFails() {
        assertThrows(SQLException.class, () -> countDocs("useEncryption=false&" + credentials()));
    }

    @Test
    void tlsStillNeedsCredentials() {
        assertThrows(SQLException.class,
            () -> countDocs("disableCertificateVerification=true"));
    }
}
