// A JDBC client for the tests: one JVM that runs what pytest asks through the real Arrow Flight
// SQL JDBC driver and answers in JSON, so a test module pays for one JVM start, not one per case.
//
// Protocol (tests/support/jdbc.py speaks it): one request per line on stdin, its words separated
// by spaces, each word base64 of UTF-8 text or "~" for a Java null; one JSON object per line on
// stdout, {"ok": ...} or {"error": {...}}. Requests:
//   connect CID URL [KEY VALUE]...         DriverManager.getConnection(URL, properties)
//   close CID
//   meta CID METHOD ARG...                 any DatabaseMetaData method, by name and arity
//   query CID SQL [MAXROWS]                Statement.executeQuery, the result set as JSON
//   prepare CID PID SQL                    Connection.prepareStatement; answers its metadata
//   execute PID [TYPE:VALUE]...            bind (int, long, string, date, decimal, double,
//                                          bool, timestamp, null:<java.sql.Types code>) and run
//   unprepare PID
//   scan CID SQL                           stream every row: the count and a checksum per column
//   connection CID METHOD [ARG]            setCatalog / getCatalog / getSchema / isReadOnly ...
//   metaall CID                            every DatabaseMetaData method without arguments:
//                                          {name: value} and the errors as {name: message}
import java.lang.reflect.Method;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.ParameterMetaData;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;

public final class JdbcProbe {
  private static final Map<String, Connection> CONNECTIONS = new HashMap<>();
  private static final Map<String, PreparedStatement> PREPARED = new HashMap<>();

  public static void main(String[] args) throws Exception {
    java.io.BufferedReader in =
        new java.io.BufferedReader(new java.io.InputStreamReader(System.in, StandardCharsets.UTF_8));
    java.io.PrintStream out = new java.io.PrintStream(System.out, true, "UTF-8");
    String line;
    while ((line = in.readLine()) != null) {
      if (line.isBlank()) {
        continue;
      }
      String answer;
      try {
        answer = "{\"ok\":" + handle(decode(line)) + "}";
      } catch (Throwable error) {
        answer = "{\"error\":" + describe(error) + "}";
      }
      out.println(answer);
    }
  }

  private static List<String> decode(String line) {
    List<String> words = new ArrayList<>();
    for (String word : line.trim().split(" ")) {
      words.add(
          word.equals("~")
              ? null
              : new String(Base64.getDecoder().decode(word), StandardCharsets.UTF_8));
    }
    return words;
  }

  private static String handle(List<String> w) throws Exception {
    switch (w.get(0)) {
      case "connect":
        {
          Properties properties = new Properties();
          for (int i = 3; i + 1 < w.size(); i += 2) {
            properties.setProperty(w.get(i), w.get(i + 1));
          }
          CONNECTIONS.put(w.get(1), DriverManager.getConnection(w.get(2), properties));
          return "true";
        }
      case "close":
        {
          Connection connection = CONNECTIONS.remove(w.get(1));
          if (connection != null) {
            connection.close();
          }
          return "true";
        }
      case "meta":
        return meta(connection(w.get(1)).getMetaData(), w.get(2), w.subList(3, w.size()));
      case "query":
        try (Statement statement = connection(w.get(1)).createStatement();
            ResultSet rows = statement.executeQuery(w.get(2))) {
          return resultSet(rows, w.size() > 3 ? Integer.parseInt(w.get(3)) : 100000);
        }
      case "prepare":
        {
          PreparedStatement statement = connection(w.get(1)).prepareStatement(w.get(3));
          PREPARED.put(w.get(2), statement);
          return preparedMetadata(statement);
        }
      case "execute":
        {
          PreparedStatement statement = PREPARED.get(w.get(1));
          if (statement == null) {
            throw new IllegalArgumentException("no prepared statement " + w.get(1));
          }
          statement.clearParameters();
          for (int i = 2; i < w.size(); i++) {
            bind(statement, i - 1, w.get(i));
          }
          try (ResultSet rows = statement.executeQuery()) {
            return resultSet(rows, 100000);
          }
        }
      case "unprepare":
        {
          PreparedStatement statement = PREPARED.remove(w.get(1));
          if (statement != null) {
            statement.close();
          }
          return "true";
        }
      case "scan":
        try (Statement statement = connection(w.get(1)).createStatement();
            ResultSet rows = statement.executeQuery(w.get(2))) {
          return scan(rows);
        }
      case "connection":
        return connectionCall(connection(w.get(1)), w.get(2), w.subList(3, w.size()));
      case "metaall":
        return everyMeta(connection(w.get(1)).getMetaData());
      default:
        throw new IllegalArgumentException("unknown request " + w.get(0));
    }
  }

  private static Connection connection(String id) {
    Connection connection = CONNECTIONS.get(id);
    if (connection == null) {
      throw new IllegalArgumentException("no connection " + id);
    }
    return connection;
  }

  private static String connectionCall(Connection connection, String method, List<String> args)
      throws SQLException {
    switch (method) {
      case "setCatalog":
        connection.setCatalog(args.get(0));
        return "true";
      case "setSchema":
        connection.setSchema(args.get(0));
        return "true";
      case "getCatalog":
        return json(connection.getCatalog());
      case "getSchema":
        return json(connection.getSchema());
      case "isReadOnly":
        return json(connection.isReadOnly());
      case "getAutoCommit":
        return json(connection.getAutoCommit());
      case "isValid":
        return json(connection.isValid(10));
      case "getTransactionIsolation":
        return json(connection.getTransactionIsolation());
      default:
        throw new IllegalArgumentException("unknown connection method " + method);
    }
  }

  /** Call a DatabaseMetaData method by name with string arguments converted to its types. */
  private static String meta(DatabaseMetaData metadata, String name, List<String> args)
      throws Exception {
    for (Method method : DatabaseMetaData.class.getMethods()) {
      if (!method.getName().equals(name) || method.getParameterCount() != args.size()) {
        continue;
      }
      Class<?>[] types = method.getParameterTypes();
      Object[] values = new Object[args.size()];
      for (int i = 0; i < types.length; i++) {
        String arg = args.get(i);
        if (types[i] == String.class) {
          values[i] = arg;
        } else if (types[i] == String[].class) {
          values[i] = arg == null ? null : arg.isEmpty() ? new String[0] : arg.split(",");
        } else if (types[i] == int.class) {
          values[i] = Integer.parseInt(arg);
        } else if (types[i] == boolean.class) {
          values[i] = Boolean.parseBoolean(arg);
        } else if (types[i] == int[].class) {
          values[i] = null;
        } else {
          throw new IllegalArgumentException("cannot pass " + types[i] + " to " + name);
        }
      }
      Object result;
      try {
        result = method.invoke(metadata, values);
      } catch (java.lang.reflect.InvocationTargetException e) {
        throw e.getCause() instanceof Exception ? (Exception) e.getCause() : e;
      }
      if (result instanceof ResultSet) {
        try (ResultSet rows = (ResultSet) result) {
          return resultSet(rows, 100000);
        }
      }
      return result instanceof Connection ? "true" : json(result);
    }
    throw new IllegalArgumentException("DatabaseMetaData has no " + name + "/" + args.size());
  }

  /** What a BI tool reads when it opens a connection: every argument-free metadata call. */
  private static String everyMeta(DatabaseMetaData metadata) {
    StringBuilder values = new StringBuilder("{");
    StringBuilder errors = new StringBuilder("{");
    Method[] methods = DatabaseMetaData.class.getMethods();
    java.util.Arrays.sort(methods, java.util.Comparator.comparing(Method::getName));
    for (Method method : methods) {
      if (method.getParameterCount() != 0 || method.getName().equals("getConnection")) {
        continue;
      }
      try {
        Object result = method.invoke(metadata);
        String shown = result instanceof ResultSet ? "\"(result set)\"" : json(result);
        if (result instanceof ResultSet) {
          ((ResultSet) result).close();
        }
        values.append(values.length() > 1 ? "," : "").append(json(method.getName()));
        values.append(":").append(result == null ? "null" : shown);
      } catch (Throwable error) {
        Throwable cause = error.getCause() != null ? error.getCause() : error;
        errors.append(errors.length() > 1 ? "," : "").append(json(method.getName()));
        errors.append(":").append(json(cause.getClass().getName() + ": " + cause.getMessage()));
      }
    }
    return "{\"values\":" + values + "},\"errors\":" + errors + "}}";
  }

  private static void bind(PreparedStatement statement, int index, String spec)
      throws SQLException {
    int colon = spec.indexOf(':');
    String type = spec.substring(0, colon);
    String value = spec.substring(colon + 1);
    switch (type) {
      case "int":
        statement.setInt(index, Integer.parseInt(value));
        break;
      case "long":
        statement.setLong(index, Long.parseLong(value));
        break;
      case "string":
        statement.setString(index, value);
        break;
      case "date":
        statement.setDate(index, java.sql.Date.valueOf(value));
        break;
      case "decimal":
        statement.setBigDecimal(index, new BigDecimal(value));
        break;
      case "double":
        statement.setDouble(index, Double.parseDouble(value));
        break;
      case "bool":
        statement.setBoolean(index, Boolean.parseBoolean(value));
        break;
      case "timestamp":
        statement.setTimestamp(index, java.sql.Timestamp.valueOf(value));
        break;
      case "null":
        statement.setNull(index, Integer.parseInt(value));
        break;
      default:
        throw new IllegalArgumentException("unknown parameter type " + type);
    }
  }

  private static String preparedMetadata(PreparedStatement statement) throws SQLException {
    StringBuilder out = new StringBuilder("{\"parameters\":[");
    ParameterMetaData parameters = statement.getParameterMetaData();
    for (int i = 1; i <= parameters.getParameterCount(); i++) {
      out.append(i > 1 ? "," : "")
          .append("{\"type\":")
          .append(parameters.getParameterType(i))
          .append(",\"type_name\":")
          .append(json(parameters.getParameterTypeName(i)))
          .append(",\"class\":")
          .append(json(parameters.getParameterClassName(i)))
          .append("}");
    }
    out.append("],\"columns\":");
    ResultSetMetaData columns = statement.getMetaData();
    out.append(columns == null ? "null" : columns(columns));
    return out.append("}").toString();
  }

  private static String columns(ResultSetMetaData metadata) throws SQLException {
    StringBuilder out = new StringBuilder("[");
    for (int i = 1; i <= metadata.getColumnCount(); i++) {
      out.append(i > 1 ? "," : "")
          .append("{\"name\":")
          .append(json(metadata.getColumnName(i)))
          .append(",\"label\":")
          .append(json(metadata.getColumnLabel(i)))
          .append(",\"type\":")
          .append(metadata.getColumnType(i))
          .append(",\"type_name\":")
          .append(json(metadata.getColumnTypeName(i)))
          .append(",\"precision\":")
          .append(metadata.getPrecision(i))
          .append(",\"scale\":")
          .append(metadata.getScale(i))
          .append(",\"nullable\":")
          .append(metadata.isNullable(i))
          .append(",\"class\":")
          .append(json(metadata.getColumnClassName(i)))
          .append(",\"schema\":")
          .append(json(metadata.getSchemaName(i)))
          .append(",\"table\":")
          .append(json(metadata.getTableName(i)))
          .append("}");
    }
    return out.append("]").toString();
  }

  private static String resultSet(ResultSet rows, int maxRows) throws SQLException {
    ResultSetMetaData metadata = rows.getMetaData();
    int width = metadata.getColumnCount();
    StringBuilder out = new StringBuilder("{\"columns\":").append(columns(metadata));
    out.append(",\"rows\":[");
    int count = 0;
    while (count < maxRows && rows.next()) {
      out.append(count > 0 ? "," : "").append("[");
      for (int i = 1; i <= width; i++) {
        out.append(i > 1 ? "," : "").append(value(rows, i));
      }
      out.append("]");
      count++;
    }
    return out.append("]}").toString();
  }

  /**
   * A value as {"class": its Java class, "text": a lossless rendering}, or null. Where getObject
   * fails (Avatica has no getObject for TIMESTAMP_WITH_TIMEZONE), {"error": its message,
   * "timestamp": getTimestamp, "text": getString}.
   */
  private static String value(ResultSet rows, int column) throws SQLException {
    Object value;
    try {
      value = rows.getObject(column);
    } catch (RuntimeException error) {
      java.sql.Timestamp timestamp = rows.getTimestamp(column);
      if (timestamp == null) {
        return "null";
      }
      return "{\"error\":" + json(error.getMessage()) + ",\"timestamp\":" + json(timestamp)
          + ",\"text\":" + json(rows.getString(column)) + "}";
    }
    if (value == null || rows.wasNull()) {
      return "null";
    }
    String text;
    if (value instanceof BigDecimal) {
      text = ((BigDecimal) value).toPlainString();
    } else if (value instanceof byte[]) {
      StringBuilder hex = new StringBuilder();
      for (byte b : (byte[]) value) {
        hex.append(String.format("%02x", b));
      }
      text = hex.toString();
    } else if (value instanceof java.sql.Array || value instanceof Map || value instanceof List) {
      text = String.valueOf(value);
    } else {
      text = value.toString();
    }
    return "{\"class\":" + json(value.getClass().getName()) + ",\"text\":" + json(text) + "}";
  }

  /** Every row read: the count, and per column the sum of its numbers or of its texts' lengths. */
  private static String scan(ResultSet rows) throws SQLException {
    int width = rows.getMetaData().getColumnCount();
    BigDecimal[] sums = new BigDecimal[width];
    java.util.Arrays.fill(sums, BigDecimal.ZERO);
    long count = 0;
    long nulls = 0;
    while (rows.next()) {
      count++;
      for (int i = 0; i < width; i++) {
        Object value = rows.getObject(i + 1);
        if (value == null) {
          nulls++;
        } else if (value instanceof BigDecimal) {
          sums[i] = sums[i].add((BigDecimal) value);
        } else if (value instanceof Long || value instanceof Integer || value instanceof Short) {
          sums[i] = sums[i].add(BigDecimal.valueOf(((Number) value).longValue()));
        } else {
          sums[i] = sums[i].add(BigDecimal.valueOf(value.toString().length()));
        }
      }
    }
    StringBuilder out = new StringBuilder("{\"rows\":").append(count);
    out.append(",\"nulls\":").append(nulls).append(",\"sums\":[");
    for (int i = 0; i < width; i++) {
      out.append(i > 0 ? "," : "").append(json(sums[i].toPlainString()));
    }
    return out.append("]}").toString();
  }

  /** The error as the JDBC user meets it: class, message, SQL state and every cause. */
  private static String describe(Throwable error) {
    StringBuilder out = new StringBuilder("{\"class\":").append(json(error.getClass().getName()));
    out.append(",\"message\":").append(json(error.getMessage()));
    if (error instanceof SQLException) {
      out.append(",\"sql_state\":").append(json(((SQLException) error).getSQLState()));
    }
    out.append(",\"causes\":[");
    Throwable cause = error.getCause();
    for (int depth = 0; cause != null && depth < 20; depth++, cause = cause.getCause()) {
      out.append(depth > 0 ? "," : "")
          .append("{\"class\":")
          .append(json(cause.getClass().getName()))
          .append(",\"message\":")
          .append(json(cause.getMessage()))
          .append("}");
    }
    java.io.StringWriter trace = new java.io.StringWriter();
    error.printStackTrace(new java.io.PrintWriter(trace));
    return out.append("],\"trace\":").append(json(trace.toString())).append("}").toString();
  }

  private static String json(Object value) {
    if (value == null) {
      return "null";
    }
    if (value instanceof Boolean || value instanceof Number) {
      return value.toString();
    }
    String text = value.toString();
    StringBuilder out = new StringBuilder("\"");
    for (int i = 0; i < text.length(); i++) {
      char c = text.charAt(i);
      if (c == '"' || c == '\\') {
        out.append('\\').append(c);
      } else if (c < 0x20) {
        out.append(String.format("\\u%04x", (int) c));
      } else {
        out.append(c);
      }
    }
    return out.append('"').toString();
  }
}
