from thresher.api.cli import main

main()
