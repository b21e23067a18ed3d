package dev.quiver.jdbc;

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.SQLException;
import java.util.Properties;

/**
 * The Quiver servers the tests talk to, from the system properties that
 * tests/java/test_jdbc_driver.py passes to Maven, and the JDBC URLs a BI tool would use.
 */
final class Servers {
    static final String DRIVER_CLASS = "org.apache.arrow.driver.jdbc.ArrowFlightJdbcDriver";

    private Servers() {}

    static String prop(String name) {
        String value = System.getProperty(name);
        if (value == null || value.isEmpty()) {
            throw new IllegalStateException("system property " + name + " is not set: run these "
                + "tests through pytest tests/java/test_jdbc_driver.py, which starts the servers");
        }
        return value;
    }

    /** {@code jdbc:arrow-flight-sql://<server>/?<query>} for the server named by property. */
    static String url(String serverProperty, String query) {
        return "jdbc:arrow-flight-sql://" + prop(serverProperty) + "/?" + query;
    }

    /** The server without authentication, over plain TCP. */
    static Connection plain() throws SQLException {
        return DriverManager.getConnection(url("quiver.plain", "useEncryption=false"));
    }

    static Connection connect(String url) throws SQLException {
        return DriverManager.getConnection(url);
    }

    static Connection connect(String url, Properties props) throws SQLException {
        return DriverManager.getConnection(url, props);
    }
}
