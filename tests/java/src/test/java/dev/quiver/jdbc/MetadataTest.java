package dev.quiver.jdbc;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Types;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** What a BI tool asks through DatabaseMetaData when it connects and browses tables. */
class MetadataTest {
    private static Connection conn;
    private static DatabaseMetaData meta;

    @BeforeAll
    static void open() throws SQLException {
        conn = Servers.plain();
        meta = conn.getMetaData();
    }

    @AfterAll
    static void close() throws SQLException {
        conn.close();
    }

    private static List<String> column(ResultSet rs, String name) throws SQLException {
        List<String> out = new ArrayList<>();
        try (rs) {
            while (rs.next()) {
                out.add(rs.getString(name));
            }
        }
        return out;
    }

    @Test
    void theDriverIsFoundByItsClassNameAndAcceptsTheUrl() throws Exception {
        Class.forName(Servers.DRIVER_CLASS);
        assertTrue(java.sql.DriverManager.getDriver(Servers.url("quiver.plain", "useEncryption=false"))
            .acceptsURL("jdbc:arrow-flight-sql://127.0.0.1:50051/?useEncryption=false"));
    }

    @Test
    void connectTimeQuestionsAreAnswered() throws SQLException {
        // DBeaver and Tableau read these right after connecting.
        assertNotNull(meta.getDatabaseProductName());
        assertNotNull(meta.getDatabaseProductVersion());
        assertNotNull(meta.getDriverName());
        assertEquals("\"", meta.getIdentifierQuoteString());
        assertNotNull(meta.getSQLKeywords());
        assertNotNull(meta.getNumericFunctions());
        assertNotNull(meta.getStringFunctions());
        assertNotNull(meta.getCatalogSeparator());
        assertFalse(meta.isReadOnly());
        assertTrue(conn.isValid(5));
        assertTrue(conn.getAutoCommit());
    }

    @Test
    void theOneCatalogIsQuiver() throws SQLException {
        assertEquals(List.of("quiver"), column(meta.getCatalogs(), "TABLE_CAT"));
    }

    @Test
    void theOneSchemaIsMainInCatalogQuiver() throws SQLException {
        try (ResultSet rs = meta.getSchemas()) {
            assertTrue(rs.next());
            assertEquals("main", rs.getString("TABLE_SCHEM"));
            assertEquals("quiver", rs.getString("TABLE_CATALOG"));
            assertFalse(rs.next());
        }
        assertEquals(List.of("main"), column(meta.getSchemas("quiver", "ma%"), "TABLE_SCHEM"));
        assertEquals(List.of(), column(meta.getSchemas("quiver", "other"), "TABLE_SCHEM"));
    }

    @Test
    void tablesAreListedWithTypeTable() throws SQLException {
        Map<String, String> types = new LinkedHashMap<>();
        try (ResultSet rs = meta.getTables(null, null, "%", null)) {
            while (rs.next()) {
                assertEquals("quiver", rs.getString("TABLE_CAT"));
                assertEquals("main", rs.getString("TABLE_SCHEM"));
                types.put(rs.getString("TABLE_NAME"), rs.getString("TABLE_TYPE"));
            }
        }
        for (String name : List.of("big", "docs", "typed")) {
            assertEquals("TABLE", types.get(name), name + " in " + types);
        }
        assertEquals(List.of("TABLE"), column(meta.getTableTypes(), "TABLE_TYPE"));
        assertEquals(List.of("docs"),
            column(meta.getTables("quiver", "main", "doc_", new String[] {"TABLE"}), "TABLE_NAME"));
        assertEquals(List.of(),
            column(meta.getTables(null, null, "%", new String[] {"VIEW"}), "TABLE_NAME"));
    }

    @Test
    void columnsCarryTheirJdbcTypesInOrderWithoutTheHiddenId() throws SQLException {
        List<String> names = new ArrayList<>();
        List<Integer> types = new ArrayList<>();
        List<String> typeNames = new ArrayList<>();
        List<Integer> positions = new ArrayList<>();
        try (ResultSet rs = meta.getColumns(null, null, "typed", "%")) {
            while (rs.next()) {
                assertEquals("typed", rs.getString("TABLE_NAME"));
                names.add(rs.getString("COLUMN_NAME"));
                types.add(rs.getInt("DATA_TYPE"));
                typeNames.add(rs.getString("TYPE_NAME"));
                positions.add(rs.getInt("ORDINAL_POSITION"));
                assertEquals(DatabaseMetaData.columnNullable, rs.getInt("NULLABLE"));
            }
        }
        assertEquals(List.of("i", "l", "d", "s", "b", "dt", "ts"), names);
        assertEquals(List.of(Types.INTEGER, Types.BIGINT, Types.DOUBLE, Types.VARCHAR,
            Types.BOOLEAN, Types.DATE, Types.TIMESTAMP), types, "DATA_TYPE " + typeNames);
        // TYPE_NAME is the server's own spelling, the one CREATE TABLE accepts.
        assertEquals(List.of("INT", "BIGINT", "DOUBLE", "VARCHAR", "BOOLEAN", "DATE",
            "TIMESTAMP"), typeNames);
        assertEquals(List.of(1, 2, 3, 4, 5, 6, 7), positions);
    }

    @Test
    void aVectorColumnIsAnArrayNamedWithItsDimension() throws SQLException {
        try (ResultSet rs = meta.getColumns(null, null, "docs", "embedding")) {
            assertTrue(rs.next());
            assertEquals(Types.ARRAY, rs.getInt("DATA_TYPE"));
            assertEquals("FLOAT[3]", rs.getString("TYPE_NAME"));
            assertFalse(rs.next());
        }
    }

    @Test
    void aColumnPatternNarrowsTheColumns() throws SQLException {
        assertEquals(List.of("title"), column(meta.getColumns("quiver", "main", "docs", "tit%"),
            "COLUMN_NAME"));
        assertEquals(List.of("id", "title", "body", "embedding"),
            column(meta.getColumns(null, null, "docs", null), "COLUMN_NAME"));
    }

    @Test
    void typeInfoAnswersWithoutAnError() throws SQLException {
        // Driver 18.3.0 does not forward getTypeInfo to the server (no CommandGetXdbcTypeInfo
        // is sent): it answers from its own empty table. Tools must get that, not an error;
        // should a later driver ask the server, its rows must carry the server's types.
        Map<String, Integer> types = new LinkedHashMap<>();
        try (ResultSet rs = meta.getTypeInfo()) {
            assertTrue(rs.findColumn("TYPE_NAME") > 0);
            assertTrue(rs.findColumn("DATA_TYPE") > 0);
            while (rs.next()) {
                types.put(rs.getString("TYPE_NAME"), rs.getInt("DATA_TYPE"));
            }
        }
        if (!types.isEmpty()) {
            assertEquals(Types.BIGINT, types.get("BIGINT"), types.toString());
            assertEquals(Types.VARCHAR, types.get("VARCHAR"), types.toString());
            assertEquals(Types.TIMESTAMP, types.get("TIMESTAMP"), types.toString());
        }
    }

    @Test
    void keysAreEmptyListsNotErrors() throws SQLException {
        assertEquals(List.of(), column(meta.getPrimaryKeys(null, null, "docs"), "COLUMN_NAME"));
        assertEquals(List.of(), column(meta.getImportedKeys(null, null, "docs"), "FKCOLUMN_NAME"));
        assertEquals(List.of(), column(meta.getExportedKeys(null, null, "docs"), "FKCOLUMN_NAME"));
    }

    @Test
    void aQuerysResultSetMetaDataNamesAndTypesItsColumns() throws SQLException {
        try (Statement st = conn.createStatement();
             ResultSet rs = st.executeQuery("SELECT i, l, d, s, b, dt, ts FROM typed")) {
            ResultSetMetaData md = rs.getMetaData();
            assertEquals(7, md.getColumnCount());
            int[] expected = {Types.INTEGER, Types.BIGINT, Types.DOUBLE, Types.VARCHAR,
                Types.BOOLEAN, Types.DATE, Types.TIMESTAMP};
            String[] names = {"i", "l", "d", "s", "b", "dt", "ts"};
            for (int c = 1; c <= 7; c++) {
                assertEquals(names[c - 1], md.getColumnLabel(c));
                assertEquals(expected[c - 1], md.getColumnType(c), names[c - 1]);
            }
        }
    }
}
