%% Entry points for starting the kv app by hand.
-module(kv).

-export([start/0, start/1]).

start() ->
    start(#{}).

%% Options: workload => false | true | kv_load:start/1 options.
start(Opts) when is_list(Opts) ->
    start(maps:from_list(Opts));
start(Opts) when is_map(Opts) ->
    case application:ensure_all_started(kv) of
        {ok, _Started} ->
            case maps:get(workload, Opts, false) of
                false -> ok;
                true -> kv_load:start();
                LoadOpts -> kv_load:start(LoadOpts)
            end;
        {error, _} = Error ->
            Error
    end.
