from genrekit.cli import main

raise SystemExit(main())
