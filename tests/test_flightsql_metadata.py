"""The Flight SQL metadata meshgate answers, as pure functions: parameter types, SqlInfo,
XDBC type info and session options (tests/test_jdbc.py checks them through the real driver)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from gateway.flightsql import flight_session_pb2 as session_pb2
from gateway.flightsql import metadata
from gateway.flightsql.parameter_types import parameter_schema
from gateway.mesh import Column

COLUMNS = {
    "sales.orders": [
        Column(name="o_orderkey", type="bigint"),
        Column(name="o_totalprice", type="decimal(15,2)"),
        Column(name="o_orderdate", type="date"),
        Column(name="o_orderstatus", type="varchar"),
    ],
    "reference.nation": [
        Column(name="n_nationkey", type="integer"),
        Column(name="n_name", type="varchar"),
    ],
}


@pytest.mark.parametrize(
    ("sql", "types"),
    [
        ("SELECT n_name FROM reference.nation WHERE n_nationkey = ?", [pa.int32()]),
        ("SELECT 1 FROM reference.nation n WHERE ? < n.n_nationkey", [pa.int32()]),
        (
            "SELECT 1 FROM sales.orders WHERE o_orderdate >= ? AND o_totalprice BETWEEN ? AND ?",
            [pa.date32(), pa.decimal128(15, 2), pa.decimal128(15, 2)],
        ),
        (
            "SELECT 1 FROM sales.orders WHERE o_orderkey IN (?, ?) AND o_orderstatus LIKE ?",
            [pa.int64(), pa.int64(), pa.string()],
        ),
        ("SELECT * FROM sales.orders LIMIT ? OFFSET ?", [pa.int64(), pa.int64()]),
        ("SELECT CAST(? AS DATE) AS d, ? AS untyped", [pa.date32(), pa.string()]),
        (
            "WITH n AS (SELECT * FROM reference.nation) SELECT * FROM n WHERE n_nationkey = ?",
            [pa.int32()],
        ),
        (
            "SELECT * FROM sales.orders WHERE o_orderkey IN "
            "(SELECT n_nationkey FROM reference.nation WHERE n_name = ?) LIMIT ?",
            [pa.string(), pa.int64()],
        ),
        ("SELECT * FROM sales.orders WHERE no_such_column = ?", [pa.string()]),
    ],
)
def test_parameters_take_the_type_of_what_they_meet(sql, types):
    schema = parameter_schema(sql, COLUMNS, dialect="duckdb")
    assert schema.types == types
    assert all(field.nullable for field in schema)


def test_a_statement_without_parameters_has_no_parameter_schema():
    assert parameter_schema("SELECT * FROM sales.orders", COLUMNS, dialect="duckdb") is None


def test_parameters_keep_the_order_they_are_written_in():
    sql = (
        "SELECT * FROM sales.orders WHERE o_orderkey IN (SELECT n_nationkey FROM "
        "reference.nation WHERE n_name = ? LIMIT ?) AND o_orderdate = ? LIMIT ?"
    )
    schema = parameter_schema(sql, COLUMNS, dialect="duckdb")
    assert schema.types == [pa.string(), pa.int64(), pa.date32(), pa.int64()]


# the SqlInfo ids the Arrow Flight SQL JDBC driver 18.3.0 knows (its FlightSql.SqlInfo enum), with
# the union member its DatabaseMetaData casts each one to; it fails on a missing one
DRIVER_INFO = {
    **dict.fromkeys([0, 1, 2, 504, 513, 514, 529, 530, 531], "string_value"),
    **dict.fromkeys(
        [
            3,
            4,
            5,
            9,
            10,
            11,
            500,
            501,
            502,
            506,
            515,
            516,
            518,
            519,
            520,
            521,
            523,
            524,
            527,
            532,
            536,
            537,
            539,
            556,
            563,
            565,
            566,
            572,
            573,
            574,
            575,
            576,
        ],
        "bool_value",
    ),  # fmt: skip
    **dict.fromkeys([*range(541, 556), *range(557, 563)], "bigint_value"),
    **dict.fromkeys(
        [
            8,
            100,
            101,
            503,
            505,
            507,
            522,
            525,
            526,
            528,
            533,
            534,
            535,
            538,
            540,
            564,
            567,
            568,
            569,
            570,
            571,
        ],
        "int32_bitmask",
    ),  # fmt: skip
    **dict.fromkeys([508, 509, 510, 511, 512], "string_list"),
    517: "int32_to_int32_list_map",
}


def test_sql_info_answers_every_id_the_jdbc_driver_reads_in_the_member_it_casts_to():
    table = metadata.sql_info_table([])
    members = {
        row: table.column("value").type.field(code).name
        for row, code in zip(
            table.column("info_name").to_pylist(),
            table.column("value").chunk(0).type_codes.to_pylist(),
            strict=True,
        )
    }
    assert members == DRIVER_INFO


def test_sql_info_answers_only_what_is_asked():
    table = metadata.sql_info_table([0, 562, 9999])
    assert table.to_pylist() == [
        {"info_name": 0, "value": "meshgate"},
        {"info_name": 562, "value": 0},
    ]


def test_xdbc_type_info_lists_every_contract_type_once():
    table = metadata.xdbc_type_info_table(None)
    assert table.schema == metadata.XDBC_TYPE_INFO_SCHEMA
    names = table.column("type_name").to_pylist()
    assert len(names) == len(set(names)) == len(metadata.XDBC_TYPES)
    dates = metadata.xdbc_type_info_table(91).to_pylist()
    assert [(t["type_name"], t["sql_data_type"], t["datetime_subcode"]) for t in dates] == [
        ("DATE", 9, 1)
    ]
    assert metadata.xdbc_type_info_table(1234).num_rows == 0


def test_getcolumns_metadata_names_types_and_decimals():
    field = pa.field("price", pa.decimal128(15, 2), metadata={"description": "Price"})
    described = metadata.flight_sql_field(field).metadata
    assert described[b"ARROW:FLIGHT:SQL:REMARKS"] == b"Price"
    assert described[b"ARROW:FLIGHT:SQL:TYPE_NAME"] == b"DECIMAL"
    assert (described[b"ARROW:FLIGHT:SQL:PRECISION"], described[b"ARROW:FLIGHT:SQL:SCALE"]) == (
        b"15",
        b"2",
    )
    assert described[b"description"] == b"Price"
    result = metadata.result_schema(pa.schema([field, pa.field("n", pa.int64())]))
    assert b"ARROW:FLIGHT:SQL:REMARKS" not in result.field("price").metadata
    assert result.field("price").metadata[b"ARROW:FLIGHT:SQL:SCALE"] == b"2"
    assert result.field("n").metadata is None


def test_session_options_accept_only_the_mesh_catalog():
    request = session_pb2.SetSessionOptionsRequest()
    request.session_options["catalog"].string_value = "mesh"
    assert dict(metadata.set_session_options(request).errors) == {}
    request.session_options["catalog"].string_value = "warehouse"
    request.session_options["schema"].string_value = "sales"
    errors = metadata.set_session_options(request).errors
    result = session_pb2.SetSessionOptionsResult
    assert {name: error.value for name, error in errors.items()} == {
        "catalog": result.INVALID_VALUE,
        "schema": result.INVALID_NAME,
    }
    assert metadata.session_options().session_options["catalog"].string_value == "mesh"


def test_session_options_over_flight(demo_mesh):
    """SetSessionOptions and GetSessionOptions are plain Flight actions (no Any wrapper); a body
    that is not a request is INVALID_ARGUMENT, not an internal error."""
    import pyarrow.flight as flight

    from tests.support.server import running_server

    with running_server(demo_mesh) as (uri, _):
        client = flight.FlightClient(uri)
        options = flight.FlightCallOptions(
            headers=[client.authenticate_basic_token("guest", "guest")]
        )
        request = session_pb2.SetSessionOptionsRequest()
        request.session_options["catalog"].string_value = "mesh"
        action = flight.Action("SetSessionOptions", request.SerializeToString())
        (answer,) = client.do_action(action, options)
        result = session_pb2.SetSessionOptionsResult()
        result.ParseFromString(answer.body.to_pybytes())
        assert dict(result.errors) == {}
        (answer,) = client.do_action(flight.Action("GetSessionOptions", b""), options)
        current = session_pb2.GetSessionOptionsResult()
        current.ParseFromString(answer.body.to_pybytes())
        assert current.session_options["catalog"].string_value == "mesh"
        with pytest.raises(pa.ArrowInvalid, match="needs a SetSessionOptionsRequest"):
            list(client.do_action(flight.Action("SetSessionOptions", b"\xff\xff"), options))
        client.close()


def test_every_metadata_command_sends_the_schema_it_announces(demo_mesh):
    """GetFlightInfo, GetSchema and DoGet read one table entry per command: what a client is
    told to expect is what arrives, for each command meshgate answers and both GetTables forms."""
    import pyarrow.flight as flight
    from google.protobuf import any_pb2

    from gateway.flightsql import flight_sql_pb2 as sql_pb2
    from gateway.flightsql.commands import METADATA_COMMANDS
    from tests.support.server import running_server

    commands = [kind() for kind in METADATA_COMMANDS]
    commands.append(sql_pb2.CommandGetTables(include_schema=True))
    with running_server(demo_mesh) as (uri, _):
        client = flight.FlightClient(uri)
        options = flight.FlightCallOptions(
            headers=[client.authenticate_basic_token("analyst", "analyst")]
        )
        for command in commands:
            wrapped = any_pb2.Any()
            wrapped.Pack(command)
            descriptor = flight.FlightDescriptor.for_command(wrapped.SerializeToString())
            info = client.get_flight_info(descriptor, options)
            announced = client.get_schema(descriptor, options).schema
            table = client.do_get(info.endpoints[0].ticket, options).read_all()
            name = type(command).__name__
            assert info.schema.equals(announced), name
            assert table.schema.equals(announced), name
        for refused, error, message in (
            (
                sql_pb2.CommandStatementUpdate(query="DELETE FROM sales.orders"),
                pa.ArrowInvalid,
                "read-only",
            ),
            (sql_pb2.TicketStatementQuery(), pa.ArrowNotImplementedError, "not supported"),
        ):
            wrapped = any_pb2.Any()
            wrapped.Pack(refused)
            descriptor = flight.FlightDescriptor.for_command(wrapped.SerializeToString())
            with pytest.raises(error, match=message):
                client.get_flight_info(descriptor, options)
        client.close()
