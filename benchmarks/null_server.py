"""A Flight SQL server that does nothing: the floor of a point query through ADBC.

It answers the calls an ADBC ``cursor.execute(sql, parameters)`` + ``fetch_arrow_table()``
makes (CreatePreparedStatement, DoPut of the parameters, GetFlightInfo, DoGet,
ClosePreparedStatement, and the GetSqlInfo of ``connect``) with a fixed one-row answer, without
parsing, planning, authenticating or reading anything. Its latency is what the client, gRPC
and pyarrow.flight cost by themselves on this machine; the gateway's own cost is the rest.

Run in its own process, like the gateway: :func:`serve` sends its URI down ``pipe``.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.flight as flight
from google.protobuf import any_pb2

from gateway.flightsql import flight_sql_pb2 as sql_pb2
from gateway.flightsql import metadata

SCHEMA = pa.schema([("answer", pa.int64())])
ANSWER = pa.record_batch([pa.array([1], pa.int64())], schema=SCHEMA)


def _pack(message) -> bytes:
    wrapped = any_pb2.Any()
    wrapped.Pack(message)
    return wrapped.SerializeToString()


def _command(data: bytes):
    wrapped = any_pb2.Any()
    wrapped.ParseFromString(data)
    if wrapped.Is(sql_pb2.CommandGetSqlInfo.DESCRIPTOR):
        message = sql_pb2.CommandGetSqlInfo()
        wrapped.Unpack(message)
        return message
    return None


class NullFlightSqlServer(flight.FlightServerBase):
    def do_action(self, context, action):
        if action.type == "CreatePreparedStatement":
            result = sql_pb2.ActionCreatePreparedStatementResult(
                prepared_statement_handle=b"statement",
                dataset_schema=SCHEMA.serialize().to_pybytes(),
            )
            return [flight.Result(pa.py_buffer(_pack(result)))]
        return []

    def do_put(self, context, descriptor, reader, writer):
        reader.read_all()
        result = sql_pb2.DoPutPreparedStatementResult(prepared_statement_handle=b"statement")
        writer.write(pa.py_buffer(result.SerializeToString()))

    def get_flight_info(self, context, descriptor):
        if isinstance(_command(descriptor.command), sql_pb2.CommandGetSqlInfo):
            schema, ticket = metadata.SQL_INFO_SCHEMA, descriptor.command
        else:
            schema = SCHEMA
            ticket = _pack(sql_pb2.TicketStatementQuery(statement_handle=b"statement"))
        return flight.FlightInfo(schema, descriptor, [flight.FlightEndpoint(ticket, [])], -1, -1)

    def do_get(self, context, ticket):
        command = _command(ticket.ticket)
        if command is not None:
            return flight.RecordBatchStream(metadata.sql_info_table(command.info))
        return flight.RecordBatchStream(pa.RecordBatchReader.from_batches(SCHEMA, [ANSWER]))


def serve(pipe) -> None:
    server = NullFlightSqlServer("grpc://127.0.0.1:0")
    pipe.send(f"grpc://127.0.0.1:{server.port}")
    server.serve()
