# pip's "Location ... is ignored" warnings: a pip configuration that names local index folders
# (extra-index-url / find-links) prints two for every package those folders do not hold.
# tools/setup_env.sh drops these lines and shows the rest of pip's output (sed -E -f this file).
/^WARNING: Location '[^']*' is ignored: it is (neither a file nor a directory|either a non-existing path or lacks a specific scheme)\.$/d
